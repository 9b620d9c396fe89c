"""Sphinx configuration of the iresflow documentation site (``make docs``).

Pages are MyST Markdown; tutorials are MyST notebooks executed at build time (myst-nb), at a tiny
size when ``IRESFLOW_DOCS_TINY=1`` (the test suite's build). The API reference is autodoc with
napoleon (Google-style docstrings).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # the package, when building from a checkout

project = "iresflow"
author = "the iresflow developers"
copyright = "2026, the iresflow developers"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "gpu/**", "demo/**", "hybrid/**"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

nb_execution_mode = "force"  # every tutorial runs at every build
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "separated"
add_module_names = False  # FlowDistribution, not iresflow.distributions.flow_distribution.FlowDistribution
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # NamedTuple fields are documented once (by autodoc), not again as attributes

html_theme = "furo"
html_title = "iresflow"
suppress_warnings = ["myst.header", "toc.no_title"]  # result tables written by scripts start without a title
