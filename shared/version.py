"""The installed DCodeX version, as services, the client and the CLI report it."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version


def version() -> str:
    try:
        return package_version("dcodex")
    except PackageNotFoundError:
        return "0.0.0"
