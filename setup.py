"""Ship the repository's `templates/` and `containers/` inside the wheel.

fastuner renders templates/ (the pull-request comment, the CI workflow) and runs the programs in
containers/ (training and serving) as processes. In a checkout (and an editable install) they are read
from the repository root; a built wheel carries copies as `fastuner/_templates` and
`fastuner/_containers`, so `pip install fastuner` works the same. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ASSETS = {"templates": "_templates", "containers": "_containers"}


class BuildWithAssets(build_py):
    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        for source, name in ASSETS.items():
            target = Path(self.build_lib) / "fastuner" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(root / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "Dockerfile"))


setup(cmdclass={"build_py": BuildWithAssets})
