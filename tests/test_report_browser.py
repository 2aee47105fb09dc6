"""The report of a real run in real headless Chromium, offline: no console message, every
chart rendered, the hostile label shown as text (tables, axis labels, tooltips) and never
cut. The density and network sections are rendered from recorded real runs
(tests/data/runs/density and net): their charts drawn, with a legend entry per line and
the density CI bands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

from bench import store
from bench.report import html
from tests.test_report import EVIL, blob, make_run

real_run = pytest.mark.requires("chromium", "root", "cgroup", "compiler", "host", "namespaces")

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;"
# After the charts have drawn: open a tooltip on every chart (tooltips render HTML).
SHOW_TIPS = """<script>
setTimeout(function () {
  document.querySelectorAll("[data-chart]").forEach(function (el) {
    var c = echarts.getInstanceByDom(el);
    if (c) c.dispatchAction({type: "showTip", seriesIndex: 0, dataIndex: 1});
  });
}, 300);
</script>"""


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium with every route to the network closed: a fresh network
    namespace when we may make one, and a dead proxy plus a resolver that finds nothing
    (any request then fails, and a failed load is a console error)."""
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--proxy-server=socks5://127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        *extra,
        url,
    ]
    if os.geteuid() == 0 and shutil.which("unshare"):
        cmd = ["unshare", "--net", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("browser") / "report.html"
    html.write(out, html.render(store.read_manifest(run), store.load_samples(run)))
    return out


def console_messages(stderr: str) -> list[str]:
    """Console lines of the page (Chromium's own chrome:// pages log too: not ours)."""
    return [
        line
        for line in stderr.splitlines()
        if ":CONSOLE" in line and "source: chrome://" not in line
    ]


@real_run
def test_report_renders_offline_without_console_errors(page, tmp_path):
    res = chromium(page.as_uri(), tmp_path / "profile", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    dom = res.stdout
    charts = re.findall(r"<div[^>]*\bdata-chart=[^>]*>", dom)
    assert len(charts) >= 10
    not_drawn = [c for c in charts if 'data-rendered="1"' not in c]
    assert not_drawn == []
    assert dom.count("<svg") >= len(charts)
    # the label as text in the tables and headline, and in the SVG axis labels: wrapped
    # onto lines there, never cut (no ellipsis), its last part present too
    assert dom.count(ESCAPED) >= 5
    svg_text = re.findall(r"<(?:text|tspan)[^>]*>([^<]*)<", dom)
    assert any(t.startswith("&lt;script&gt;alert(1)") for t in svg_text)
    assert any(t.endswith("x&lt;/b&gt;") or t == "b&gt;" for t in svg_text)
    assert not [t for t in svg_text if "…" in t]
    # nothing from the data became markup or ran
    assert "<b>x</b>" not in dom
    assert "<script>alert(1)</script>" not in dom


@real_run
def test_tooltips_escape_the_label(page, tmp_path):
    hot = tmp_path / "tips.html"
    head, _, tail = page.read_text().rpartition("</body>")
    hot.write_text(head + SHOW_TIPS + "</body>" + tail)
    res = chromium(hot.as_uri(), tmp_path / "profile", "--dump-dom")
    assert res.returncode == 0
    assert console_messages(res.stderr) == []
    dom = res.stdout
    tips = re.findall(r"<div[^>]*(?:tooltip|z-index: 9999999)[^>]*>.*?</div>", dom, re.S)
    assert any("&lt;script&gt;" in t for t in tips), "no tooltip with the label was shown"
    assert "<b>x</b>" not in dom


@real_run
def test_screenshot_at_1280(page, tmp_path):
    shot = tmp_path / "shot.png"
    res = chromium(
        page.as_uri(),
        tmp_path / "profile",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1280,4000",
    )
    assert res.returncode == 0 and shot.stat().st_size > 50_000
    assert console_messages(res.stderr) == []
    assert EVIL not in page.read_text().split('id="isobench-data"')[0]


# -- density and network sections, from recorded real runs (tests/data/runs/*/README) -------
RUNS = Path(__file__).parent / "data" / "runs"


def rendered(name: str, where: Path) -> tuple[Path, dict]:
    run = RUNS / name
    text = html.render(store.read_manifest(run), store.load_samples(run), n_boot=200)
    out = where / f"{name}.html"
    out.write_text(text)
    return out, blob(text)


def charts_in(dom: str, kind: str) -> list[str]:
    return re.findall(rf'<div[^>]*\bdata-chart="{kind}"[^>]*>', dom)


@pytest.mark.requires("chromium")
@pytest.mark.parametrize("name, kind", [("density", "density"), ("net", "net")])
def test_the_section_renders_without_console_errors(name, kind, tmp_path):
    page, d = rendered(name, tmp_path)
    res = chromium(page.as_uri(), tmp_path / "profile", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    dom = res.stdout
    section = d["density" if kind == "density" else "net"]
    charts = charts_in(dom, kind)
    assert len(charts) == len(section["charts"]) >= 3
    every = re.findall(r"<div[^>]*\bdata-chart=[^>]*>", dom)
    assert [c for c in every if 'data-rendered="1"' not in c] == []
    # each chart drew an SVG with one legend entry per line / figure and text on its axes
    blocks = re.findall(rf'data-chart="{kind}"[^>]*>(.*?)</svg>', dom, re.S)
    assert len(blocks) == len(charts)
    for block, c in zip(blocks, section["charts"], strict=True):
        names = [
            s["env"] + (" (emulated)" if s.get("emulated") else "")
            if kind == "density"
            else s["name"]
            for s in c["series"]
        ]
        svg_text = [unescape(t) for t in re.findall(r"<(?:text|tspan)[^>]*>([^<]*)<", block)]
        for n in names:
            assert n in svg_text, (c["id"], n)
        if kind == "density":  # the CI bands: one filled, translucent path per line
            assert len(re.findall(r'fill-opacity="0.18"|opacity="0.18"', block)) >= len(names)


# -- long environment names: never broken inside a word (issue 21) -------------------------
LONG_LABELS = (
    "namespaces",
    "docker:seccomp=unconfined",
    "docker:runtime=runsc",
    "podman:network=host,cpus=1",
    "oci:runtime=crun",
    "libvirt:machine=q35",
    "qemu:accel=tcg",
    "cri:runtime=kata-qemu-experimental",
    "k8s:runtime=runsc",
)
WORD_EDGE = r"(?:^|(?<=[:,=/ ]))"  # where a name may break: after ':', ',', '=', '/', ' '


def ten_environments(where: Path) -> Path:
    """The recorded v1 run (host + namespaces) with its namespaces figures copied to nine
    environments of long names, as the main job's matrix has."""
    import json

    run = RUNS / "v1"
    manifest = json.loads((run / "manifest.json").read_text())
    ns = manifest["environments"]["namespaces"]
    manifest["environments"] = {"host": manifest["environments"]["host"]}
    manifest["matrix"]["envs"] = [{"kind": "host", "label": "host", "options": {}}]
    for label in LONG_LABELS:
        manifest["environments"][label] = ns | {"emulated": label.startswith("qemu")}
        manifest["matrix"]["envs"].append({"kind": "namespaces", "label": label, "options": {}})
    lines = []
    for line in (run / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        copies = [rec["env"]] if rec["env"] == "host" else LONG_LABELS
        lines += [json.dumps(rec | {"env": e, "cell": f"{e}|{rec['workload']}"}) for e in copies]
    where.mkdir()
    (where / "manifest.json").write_text(json.dumps(manifest))
    (where / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return where


def broken_inside_a_word(texts: list[str], labels) -> list[str]:
    """The SVG text lines that are a piece of an environment name cut inside a word."""
    bad = []
    for t in {t.strip() for t in texts if t.strip()} - set(labels):
        for label in labels:
            if t not in label or len(t) < 3:  # a unit (ns, ms) is no piece of a name
                continue
            starts = [m.start() for m in re.finditer(re.escape(t), label)]
            edges = {m.start() for m in re.finditer(WORD_EDGE, label)} | {len(label)}
            if not any(s in edges and s + len(t) in edges for s in starts):
                bad.append(f"{t!r} of {label!r}")
    return bad


@pytest.mark.requires("chromium")
@pytest.mark.parametrize("width", [1400, 900])
def test_long_environment_names_never_break_inside_a_word(width, tmp_path):
    run = ten_environments(tmp_path / "run")
    page = tmp_path / "ten.html"
    page.write_text(html.render(store.read_manifest(run), store.load_samples(run), n_boot=200))
    res = chromium(page.as_uri(), tmp_path / "profile", "--dump-dom", f"--window-size={width},3000")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    dom = res.stdout
    every = re.findall(r"<div[^>]*\bdata-chart=[^>]*>", dom)
    assert len(every) >= 10 and [c for c in every if 'data-rendered="1"' not in c] == []
    texts = [unescape(t) for t in re.findall(r"<(?:text|tspan)[^>]*>([^<]*)<", dom)]
    assert "unconfined" in " ".join(texts)  # the names are drawn ...
    assert broken_inside_a_word(texts, ("host", *LONG_LABELS)) == []  # ... never in a word


def test_a_name_cut_inside_a_word_is_found():
    cut = ["docker:", "seccomp", "=", "unconfi", "ned", "host", "seccomp=", "unconfined"]
    assert sorted(broken_inside_a_word(cut, ("host", "docker:seccomp=unconfined"))) == [
        "'ned' of 'docker:seccomp=unconfined'",
        "'seccomp' of 'docker:seccomp=unconfined'",
        "'unconfi' of 'docker:seccomp=unconfined'",
    ]
