"""Render whichever switch a site names: FreeSWITCH or Asterisk, chosen by the switch's kind."""

from __future__ import annotations

from switchctl.config.site import Site, SwitchConfig
from switchctl.render.asterisk import render_asterisk
from switchctl.render.freeswitch import RenderError, render_freeswitch

__all__ = ["pick_any_switch", "render_site"]


def pick_any_switch(site: Site, switch: str | None = None) -> SwitchConfig:
    """The named switch, or the site's only switch (of any kind)."""
    if switch is not None:
        for sw in site.switches:
            if sw.name == switch:
                return sw
        names = ", ".join(s.name for s in site.switches)
        raise RenderError(f"site {site.name} has no switch named {switch!r} (it has: {names})")
    if len(site.switches) != 1:
        names = ", ".join(f"{s.name} ({s.kind})" for s in site.switches)
        raise RenderError(f"site {site.name} has {len(site.switches)} switches ({names}); name the one to render")
    return site.switches[0]


def render_site(site: Site, switch: str | None = None) -> dict[str, bytes]:
    """The conf_dir files (relative path -> bytes) for `switch` (default: the site's only one)."""
    sw = pick_any_switch(site, switch)
    if sw.kind == "freeswitch":
        return render_freeswitch(site, sw.name)
    if sw.kind == "asterisk":
        return render_asterisk(site, sw.name)
    raise RenderError(f"switch {sw.name}: cannot render kind {sw.kind!r}")
