"""One version everywhere a user reads it: setup.cfg, tfft.__version__, `tfft --version`, CHANGELOG.md."""

import configparser
import re

import pytest

import tfft
from tfft.cli import main

from conftest import REPO


def test_setup_cfg_and_the_package_declare_the_same_version():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg", encoding="utf-8")
    assert setup["metadata"]["version"] == tfft.__version__


def test_tfft_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"tfft {tfft.__version__}"


def test_the_changelog_opens_with_this_version():
    headings = re.findall(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(encoding="utf-8"), flags=re.M)
    assert headings and headings[0] == tfft.__version__, f"CHANGELOG.md sections: {headings}"
