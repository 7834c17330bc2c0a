"""The Hugging Face Hub: ``nlp-ssl push RUN --repo-id NS/NAME`` (export, then one commit),
the end-of-run and per-checkpoint pushes of a recipe with ``push_to_hub``, and retries of
what a second try may fix."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from nlp_ssl.errors import OutputError
from nlp_ssl.export import export
from nlp_ssl.hub_options import HubOptions, hub_offline
from nlp_ssl.model_card import PUSH_RECORD, RunRecord, descriptor, find_run, pushed_base_model

logger = logging.getLogger(__name__)

RETRIES = 3


class PublishError(OutputError):
    """A push did not complete; local files are untouched."""


def refuse_offline_push(options: HubOptions) -> None:
    """A recipe that will push must not find out after hours of training that it cannot."""
    if options.pushes and hub_offline():
        raise PublishError(
            "push_to_hub is set but HF_HUB_OFFLINE is too: unset one of them "
            "(checked before training; nothing was done)"
        )


def push_run(options: HubOptions, run_dir: Path) -> dict:
    """The end-of-run push; a failure keeps the finished run and says how to push it later."""
    try:
        return push(str(run_dir), options.hub_model_id, private=options.hub_private)
    except PublishError as exc:
        raise PublishError(
            f"the run finished and is saved in {run_dir}, but {exc}; push it later with "
            f"nlp-ssl push {run_dir} --repo-id {options.hub_model_id}"
        ) from None


def after_run(options: HubOptions, run_dir: Path, is_main_process: bool) -> dict:
    """What every training stage does once its files are written: push the run if the recipe
    says so, and return its metrics (the main process's; the others return nothing)."""
    if not is_main_process:
        return {}
    if options.push_to_hub:
        push_run(options, run_dir)
    from nlp_ssl.outputs import read_metrics

    return read_metrics(run_dir)


def checkpoint_pusher(options: HubOptions):
    """``fit``'s ``on_checkpoint`` hook pushing each checkpoint's model to the checkpoint branch."""
    if not options.hub_checkpoint_branch:
        return None

    def on_checkpoint(path: Path, step: int) -> None:
        push(
            str(path / "model"),
            options.hub_model_id,
            private=options.hub_private,
            revision=options.hub_checkpoint_branch,
            tag=f"step-{step}",
            message=f"Checkpoint at step {step}",
        )

    return on_checkpoint


class Publisher:
    """What a training stage is handed to publish a recipe with ``push_to_hub`` /
    ``hub_checkpoint_branch``: a check before any work, a hook per checkpoint, the push of the
    finished run. The CLI and the pipeline hand one to every stage whose recipe can push."""

    def __init__(self, options: HubOptions):
        self.options = options

    def check(self) -> None:
        refuse_offline_push(self.options)

    @property
    def on_checkpoint(self):
        return checkpoint_pusher(self.options)

    def after(self, run_dir: Path, is_main_process: bool) -> dict:
        return after_run(self.options, run_dir, is_main_process)


def publishing(cfg) -> dict:
    """The keyword arguments that hand a stage its publisher (none for a recipe that cannot push)."""
    return {"publisher": Publisher(cfg)} if isinstance(cfg, HubOptions) else {}


def push(
    checkpoint: str,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    tag: str | None = None,
    message: str | None = None,
    license: str = "other",
    language: str | list[str] | None = None,
    base_model: str | None = None,
) -> dict:
    """Export ``checkpoint`` and upload it as one commit to ``repo_id`` on the Hub.

    The token comes from ``HF_TOKEN`` or ``hf auth login`` (never from a file of ours, never
    logged); the endpoint from ``HF_ENDPOINT``. Transient failures (connection, 429, 5xx) are
    retried; any failure leaves the local run as it was and says what to do next.
    """
    import tempfile

    if hub_offline():
        raise PublishError(
            "push: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it to push "
            "(nothing was exported or uploaded)"
        )
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"push: --repo-id must be NAMESPACE/NAME, got {repo_id!r}")
    from huggingface_hub import HfApi

    record = find_run(checkpoint)
    base_model = base_model or pushed_base_model(record)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT"))
    with tempfile.TemporaryDirectory(prefix="nlp-ssl-push-") as tmp:
        folder = export(
            checkpoint,
            str(Path(tmp) / "export"),
            license=license,
            language=language,
            base_model=base_model,
            repo_id=repo_id,
        )
        summary = message or _commit_message(record)
        _with_retries(
            lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"),
            "creating the repo",
            repo_id,
        )
        if revision and revision != "main":
            _with_retries(
                lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), "creating the branch", repo_id
            )
        info = _with_retries(
            lambda: api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), commit_message=summary, revision=revision, create_pr=create_pr
            ),
            "uploading",
            repo_id,
        )
        if tag:
            _with_retries(
                lambda: api.create_tag(repo_id, tag=tag, revision=info.oid, exist_ok=True), "tagging", repo_id
            )
    result = {
        "repo_id": repo_id,
        "endpoint": api.endpoint,
        "revision": revision or "main",
        "commit": info.oid,
        "commit_url": info.commit_url,
        "pr_url": info.pr_url,
        "tag": tag,
    }
    if record.run_dir is not None:  # lets a model trained from this one name it as base_model
        from nlp_ssl.outputs import write_json

        write_json(record.run_dir / PUSH_RECORD, result)
    return result


def _commit_message(record: RunRecord) -> str:
    m = record.metrics
    trained_for = descriptor(record)
    if record.stage == "finetune" and trained_for is not None:
        # the headline metric on test, else on validation ("test accuracy 0.8123")
        for key in (trained_for.headline[0], trained_for.headline[0].replace("test_", "validation_", 1)):
            if isinstance(m.get(key), (int, float)):
                return f"Upload {record.kind} model ({key.replace('_', ' ', 1)} {m[key]:.4f}) trained with nlp-ssl"
    if record.stage == "baseline" and isinstance(m.get("test_accuracy"), (int, float)):
        return (
            f"Upload {m.get('method')} {record.kind} head (test accuracy {m['test_accuracy']:.4f}) fitted with nlp-ssl"
        )
    if record.stage == "pretrain" and m.get("eval_loss") is not None:
        return f"Upload {record.kind} pretrained model (eval loss {m['eval_loss']:.4f}) trained with nlp-ssl"
    return "Upload model exported with nlp-ssl"


def _with_retries(action, what: str, repo_id: str):
    """Run a Hub call; retry what may pass on a second try, explain what will not."""
    import time

    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(1, RETRIES + 1):
        try:
            return action()
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise PublishError(
                    f"push to {repo_id}: {what} was refused ({status}): set HF_TOKEN to a token with "
                    "write access or run `hf auth login`; local files are intact"
                ) from None
            if status is not None and status < 500 and status != 429:
                first = str(exc).splitlines()[0][:200]
                raise PublishError(
                    f"push to {repo_id}: {what} failed ({status}: {first}); local files are intact"
                ) from None
            error = f"HTTP {status}"
        except (TypeError, ValueError, AttributeError, KeyError):
            raise  # a bug, not the network
        except Exception as exc:  # connection refused, DNS, timeouts (httpx / OSError classes)
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        if attempt < RETRIES:
            logger.warning("push to %s: %s failed (%s); retrying (%d/%d)", repo_id, what, error, attempt, RETRIES - 1)
            time.sleep(float(os.environ.get("NLP_SSL_PUSH_RETRY_WAIT", "2")) * 2 ** (attempt - 1))
    raise PublishError(
        f"push to {repo_id}: {what} failed {RETRIES} times ({error}); local files are intact, "
        "rerun the same nlp-ssl push command when the Hub is reachable"
    )


def add_push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a run folder (pretrain or finetune), its model/ folder, or a checkpoint")
    p.add_argument("--repo-id", required=True, help="NAMESPACE/NAME on the Hub")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    p.add_argument("--tag", default=None, help="tag the commit (e.g. step-1000)")
    p.add_argument("--message", default=None, help="commit message (default: what was trained, with its score)")
    p.add_argument("--license", default="other")
    p.add_argument(
        "--language", default=None, help="language code(s) for the card (default: the translation pair, else en)"
    )
    p.add_argument(
        "--base-model",
        default=None,
        help="Hub id of the model this one was trained from (default: found when that run was pushed with nlp-ssl)",
    )


def run_push(args: argparse.Namespace) -> dict:
    return push(
        args.checkpoint,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        tag=args.tag,
        message=args.message,
        license=args.license,
        language=args.language,
        base_model=args.base_model,
    )
