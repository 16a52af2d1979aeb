"""psvit's Hydra configs (installed as ``psvit.conf``); importing it stores the group schemas they build on."""

from psvit.schema import register

register()
