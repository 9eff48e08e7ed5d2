"""Validate a whole site: its call flows checked against the site's sounds, values, lists and phones."""

from __future__ import annotations

from pathlib import Path

from .config.site import Site
from .flows import CheckResult, check_flows


def flow_files(site: Site) -> list[Path]:
    """The site's flow files in name order (the order patterns are tried in)."""
    return sorted(p for p in site.flows_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def check_site(site: Site, display_root: Path | None = None) -> CheckResult:
    return check_flows(
        flow_files(site),
        sound_dirs=list(site.sound_dirs),
        site_values=dict(site.values),
        lists={name: list(numbers) for name, numbers in site.lists.items()},
        known_extensions={phone.extension for phone in site.phones},
        known_gateways={gateway.name for gateway in site.gateways},
        numbering=site.numbering,
        display_root=display_root if display_root is not None else Path.cwd(),
    )
