"""Maps the top-level folders under the one import root `llmpatch`.

pyproject.toml holds all metadata; this file only exists because setuptools' declarative
`packages.find` cannot discover sub-packages of folders mapped through `package-dir`.
"""
from setuptools import find_packages, setup

PACKAGE_DIRS = {
    "llmpatch": "llmpatch",
    "llmpatch.client": "client",
    "llmpatch.registry": "registry",
    "llmpatch.trainer": "trainer",
    "llmpatch.migrations": "migrations",
}

packages = []
for package, folder in PACKAGE_DIRS.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=PACKAGE_DIRS,
    package_data={"": ["*.ini", "*.mako", "*.html", "*.css", "*.js", "templates/*", "static/*"]},
)
