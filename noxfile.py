"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s demo`, `nox -s bench`."""

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def tests(session):
    session.install(".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def demo(session):
    """The quickstart's main job: quick matrix on every environment, then the report."""
    session.install(".[vm,notebook]")
    session.run("isobench", "doctor")
    session.run("isobench", "run", "--all", "--quick", "--results", "results", external=False)


@nox.session
def bench(session):
    """Speed and size figures (printed, not asserted): report size and render time."""
    session.install(".[test]")
    session.run("python", "benchmarks/bench_report.py", *session.posargs)
