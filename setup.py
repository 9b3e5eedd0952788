"""Map the top-level folders into the `specml` namespace and find their sub-packages."""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
FOLDERS = {"cli": "specml.cli", "compiler": "specml.compiler", "runtime": "specml.runtime", "targets": "specml.targets"}

package_dir = {}
packages = []
for folder, namespace in FOLDERS.items():
    package_dir[namespace] = folder
    for init in sorted((ROOT / folder).rglob("__init__.py")):
        rel = init.parent.relative_to(ROOT / folder)
        packages.append(".".join([namespace, *rel.parts]) if rel.parts else namespace)

setup(package_dir=package_dir, packages=packages, package_data={"": ["*.md", "*.json", "*.yaml", "*.j2"]})
