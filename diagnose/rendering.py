"""The report document (diagnose/report.py builds it) as text, Markdown, JSON or HTML, and
redacted for a ticket: what `pfdiag report`, the fleet report and the wizard all write."""

from __future__ import annotations

from typing import Any

FORMATS = ("text", "md", "json", "html")


def render(doc: dict[str, Any], fmt: str, to_tty: bool = False) -> str:
    """``doc`` in one of FORMATS; text is coloured and sized for the terminal when ``to_tty``."""
    from diagnose import report

    if fmt == "json":
        return report.to_json(doc)
    if fmt == "md":
        return report.render_markdown(doc)
    if fmt == "html":
        from diagnose.html import render_html

        return render_html(doc)
    import shutil

    return report.render_text(doc, width=min(120, shutil.get_terminal_size((100, 24)).columns), color=to_tty)


def redact(doc: dict[str, Any]) -> dict[str, Any]:
    """Addresses, client IPs and this server's names become stable keyed tokens (diagnose/redact.py);
    a fleet report redacts every host's report with one key, so tokens match across hosts."""
    from diagnose.redact import Redactor

    servers = [doc.get("server") or {}] + [(h.get("report") or {}).get("server") or {} for h in doc.get("hosts", [])]
    hosts: list[str] = [str(s["myhostname"]) for s in servers if s.get("myhostname")]
    hosts += [h["address"].split("@")[-1].split(":")[0] for h in doc.get("hosts", []) if h.get("address")]
    hosts += [h["host"] for h in doc.get("hosts", []) if h.get("host")]  # inventory names (ansible_host may be an IP)
    where = str((doc.get("target") or {}).get("where") or "")
    if where.startswith("ssh:"):
        hosts.append(where[4:])
    domains: list[str] = [str(s["mydomain"]) for s in servers if s.get("mydomain")]
    domains += [str(d) for s in servers for d in s.get("mydestination") or [] if d != "localhost"]
    red = Redactor(own_hostnames=hosts, own_domains=domains)
    red.learn(doc)  # its texts, and its login fields (diagnose/redact.py)
    out: dict[str, Any] = red.value(doc)
    out["redacted"] = True
    return out
