"""Packaging: the LICENSE the project declares, shipped in the wheel."""

import hashlib
import pathlib
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[1]
COPYRIGHT = "   Copyright 2026 The softmax_jax authors"
# SHA-256 of https://www.apache.org/licenses/LICENSE-2.0.txt, whose appendix has the
# placeholder line below where ours names the authors.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
PLACEHOLDER = "   Copyright [yyyy] [name of copyright owner]"


def test_license_is_the_apache_2_0_text_with_our_copyright_line():
  text = (REPO / "LICENSE").read_text(encoding="utf-8")
  assert text.count(COPYRIGHT + "\n") == 1
  template = text.replace(COPYRIGHT + "\n", PLACEHOLDER + "\n")
  assert hashlib.sha256(template.encode("utf-8")).hexdigest() == APACHE_2_0_SHA256


def test_pyproject_declares_the_license_and_ships_the_file():
  meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
  assert meta["project"]["license"] == "Apache-2.0"  # an SPDX expression (PEP 639)
  assert meta["project"]["license-files"] == ["LICENSE"]  # into the wheel's .dist-info
  # hatchling reads license-files from 1.27 on; before it, the key is an error.
  assert "hatchling>=1.27" in meta["build-system"]["requires"]
