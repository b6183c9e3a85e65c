"""The small real datasets that ship in ``data/`` and their deterministic preparation.

Nothing is downloaded, ever: every layout here is derived from files in the repository or from
files installed with a dependency (scikit-learn's digits).
"""

from pathlib import Path

#: ``data/`` at the top of the repository.
DATA_DIR = Path(__file__).resolve().parents[2] / "data"

__all__ = ["DATA_DIR"]
