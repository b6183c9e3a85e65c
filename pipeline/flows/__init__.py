"""Prefect flows and deployments: one flow per stage and the end-to-end ``vgg-paper`` (paper Sections 3-4, App. A-B).

Thin wrappers over the stages' ``run_<stage>(config)``: parameters are the stage configs, results
are the stages' result models (:mod:`pipeline.results`), whose paths the flows pass on. Part of the
``pipeline`` package, so an installed project adds no top-level ``flows`` package that could clash
with another project's. ``vgg serve`` registers them as deployments (:mod:`pipeline.flows.deploy`).
"""
