"""The EvaluationCallback: collect responses per rank, gather to rank 0, score, write."""

import inspect
import tempfile
from dataclasses import replace
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from lightning.pytorch import Callback, LightningModule, Trainer

from lmm_lightning.data.datamodule import AgreedInputError, BenchmarkDataModule, RequestBatch, all_min
from lmm_lightning.data.sampler import holds_auto, resolve_batch_size
from lmm_lightning.data.video import FrameSampling
from lmm_lightning.evaluation.gather import ResponseCollector
from lmm_lightning.evaluation.hub import push_results, split_target
from lmm_lightning.evaluation.judge import Judge, check_judged
from lmm_lightning.evaluation.loggers import log_results
from lmm_lightning.evaluation.plots import draw_plots
from lmm_lightning.evaluation.result import EvaluationResult, Settings
from lmm_lightning.evaluation.results import (
    LAYOUTS, RunInfo, dataset_card, model_name, sanitize_model_name, write_atomic, write_lm_eval_outputs, write_outputs,
)
from lmm_lightning.evaluation.scoring import Answers, Benchmark, check_exactly_once, evaluate, judging_summary
from lmm_lightning.evaluation.table import format_table
from lmm_lightning.errors import EXIT_FAILURE, EXIT_INPUT_ERROR, InputError
from lmm_lightning.requests import Request
from lmm_lightning.evaluation.failfast import (
    GATHERING, LOADED, LOADING, PREDICTING, FailFast, check_same_requests, describe_batch, is_communication_error,
)
from lmm_lightning.evaluation.store import (
    Agreement, ResponseStore, StoreScan, StoreWarning, agree_across_ranks, config_digest, request_keys,
)
from lmm_lightning.models.base import EvalModule, check_response
from lmm_lightning.models.precision import module_numerics
from lmm_lightning.parallel import is_leader
from lmm_lightning.requests import Response


class JudgeWarning(UserWarning):
    """Some judge answers could not be parsed; their documents are not scored."""


def check_output_dir(output_dir: Path) -> None:
    """The results folder must be one this process can create and write: checked before anything runs."""
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"evaluation.output_dir: {output_dir} is a file; expected a folder")
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"evaluation.output_dir: {output_dir} is below {existing}, which is a file; expected a folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise InputError(f"evaluation.output_dir: {output_dir}: cannot write in {existing} ({err.strerror}); expected a writable folder") from None


def check_non_negative(option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"evaluation.{option}: expected a non-negative integer, got {value!r}")


def connect_batch_size(datamodule: BenchmarkDataModule, pl_module: LightningModule) -> None:
    """`batch_size: auto` probed on the loaded model, the smallest answer over all ranks kept, and handed to
    the data module through its one door (`connect`) before any dataloader exists.

    FSDP shards the model after `configure_model`, and a probe must run through the sharded wrapper (as
    `predict_step` does): there the probe waits for Lightning's request of the dataloader, which comes
    right after the wrapping, and runs first."""
    from lightning.pytorch.strategies import FSDPStrategy

    datamodule.__dict__.pop("predict_dataloader", None)  # a deferred probe left by an earlier run
    if not holds_auto(datamodule.batch_size):
        return
    trainer = pl_module._trainer
    if trainer is not None and isinstance(trainer.strategy, FSDPStrategy) and trainer.strategy.model is pl_module:

        def probe_then_plan() -> Any:
            datamodule.__dict__.pop("predict_dataloader", None)
            connect_batch_size(datamodule, pl_module)
            return type(datamodule).predict_dataloader(datamodule)

        datamodule.predict_dataloader = probe_then_plan
        return
    probe = lambda request: pl_module.find_max_batch_size(request, datamodule.max_batch_size)
    resolved = resolve_batch_size(datamodule.requests, datamodule.batch_size, probe, lambda n: all_min(n, pl_module.device))
    datamodule.connect(batch_size=resolved)


def report_when_loaded(pl_module: LightningModule, failfast: FailFast, datamodule: BenchmarkDataModule) -> None:
    """Lightning has no hook between loading the model and the barrier after it (dataloaders are made next):
    wrap this run's `configure_model` so a rank still loading shows behind the ranks that finished (and waits
    in that barrier), and so `batch_size: auto` is probed on the model just loaded."""
    load = pl_module.configure_model

    def load_then_report() -> None:
        load()
        failfast.phase(LOADED)
        connect_batch_size(datamodule, pl_module)
        if datamodule.wants_model_frames:  # video_frames: model; a model without a preference gets 8 frames
            preferred = pl_module.frame_sampling() if isinstance(pl_module, EvalModule) else None
            datamodule.connect(frame_sampling=preferred or FrameSampling())

    pl_module.configure_model = load_then_report


def run_folder(pl_module: LightningModule) -> str:
    """The model's subfolder in lm-eval's layout: its adapter or weights as given, sanitized."""
    return sanitize_model_name(model_name(dict(getattr(pl_module, "hparams", {})), type(pl_module).__name__))


def model_source(pl_module: LightningModule) -> Optional[dict[str, Any]]:
    """The resolved files of a model loaded from a folder or the hub, for results.json: the store's identity
    with the per-file fingerprint folded into one digest."""
    source = pl_module.identity().get("source") if isinstance(pl_module, EvalModule) else None
    if not isinstance(source, dict):
        return None
    out = {k: v for k, v in source.items() if k not in ("files", "peft")}
    out["files_digest"] = config_digest(source.get("files"))
    if isinstance(source.get("peft"), dict):
        peft = source["peft"]
        out["peft"] = {"path": peft.get("path"), "commit": peft.get("commit"), "files_digest": config_digest(peft.get("files"))}
    return {**out, **module_numerics(pl_module)}  # precision, compute_dtype, logprob_dtype


def prompt_function(pl_module: LightningModule, requests: list[Request], documents: dict[str, Any]) -> Callable[[str], str]:
    """Each context as the model received it (after its chat template, over the request's chat turns where it
    has them, with the image placeholders of a vision model), rendered before the model is released. A model
    whose `prompt` takes other arguments is shown the text as it is."""
    prompt = getattr(pl_module, "prompt", None)
    if prompt is None:
        return lambda context: context
    parameters = inspect.signature(prompt).parameters
    required = [name for name, p in parameters.items() if p.default is inspect.Parameter.empty]
    if required not in (["context"], ["context", "n_images"]):
        return lambda context: context
    rendered: dict[str, str] = {}
    for request in requests:
        if request.context in rendered:
            continue
        if "n_images" in parameters:  # the vision model: as many placeholders as the document has images
            images = documents[request.task].visuals(request.doc_id) if request.context and request.task in documents else []
            rendered[request.context] = prompt(request.context, len(images))
        else:
            rendered[request.context] = prompt(request.context, request.messages) if "messages" in parameters else prompt(request.context)
    return lambda context: rendered.get(context, context)


def unwrap_loading(pl_module: LightningModule) -> None:
    if getattr(pl_module.__dict__.get("configure_model"), "__name__", None) == "load_then_report":
        del pl_module.configure_model


class EvaluationCallback(Callback):
    """Turns a `Trainer.predict` run over a `BenchmarkDataModule` into scored results.

    Args:
        output_dir: where results.json and samples_<task>.jsonl are written.
        bootstrap_iters: bootstrap resamples for standard errors and intervals (0: analytic).
        log_samples: write one samples_<task>.jsonl line per document.
        seed: seed of the bootstrap.
        print_table: print the results table on rank 0.
        resume: reuse responses stored in `output_dir` by an earlier run: same request and model identity, any
            world size, limit, offset or batch size.
        free_model_memory: release the model once every response is gathered, before scoring.
        log_samples_to_logger: sample records per task sent to the trainer's loggers as a table (TensorBoard, W&B).
        log_images_to_logger: images per vision task sent to those loggers, captioned with question and answer.
        push_to_hub: a Hub dataset repo ("org/name", or "org/name/folder") to upload results.json and samples to.
        stall_timeout: seconds a rank may make no progress while the others go on before every rank is stopped
            (the limit grows with the slowest model load or batch seen, so long loads and generations are safe).
        layout: "flat" writes results.json and samples_<task>.jsonl in `output_dir`; "lm_eval" writes
            lm-evaluation-harness's `<output_dir>/<model_name_sanitized>/results_<time>.json` and
            `samples_<task>_<time>.jsonl` (the response store then lives in that model folder, the same every run).
        predict_only: write the responses (samples) without metrics, as lm-eval's `--predict_only`.
        cache_dir: a response cache shared by runs in other output folders (lm-eval's `--use_cache`): the same
            store, keyed by request and model identity, read before the run and appended to as it goes.
        judge: the judge model of judged tasks (a task YAML with a `judge:` section, e.g. mmvet): any EvalModule,
            a served `OpenAIModel` or a local `HFCausalLM`; it runs on rank 0 after the evaluated model is released,
            and its answers are stored and resumed like the model's (`<run folder>/judge/store/`).
        judge_batch_size: judge requests per call (a served judge sends a call's requests concurrently).
        plots: draw results.png and a self-contained results.html of every metric with its interval next to
            results.json ("flat" layout).
    """

    def __init__(
        self,
        output_dir: str = "outputs",
        bootstrap_iters: int = 100_000,
        log_samples: bool = True,
        seed: int = 1234,
        print_table: bool = True,
        resume: bool = True,
        free_model_memory: bool = True,
        log_samples_to_logger: int = 8,
        log_images_to_logger: int = 4,
        push_to_hub: Optional[str] = None,
        stall_timeout: float = 600.0,
        layout: str = "flat",
        predict_only: bool = False,
        cache_dir: Optional[str] = None,
        judge: Optional[EvalModule] = None,
        judge_batch_size: int = 16,
        plots: bool = True,
    ) -> None:
        check_non_negative("bootstrap_iters", bootstrap_iters)
        check_non_negative("log_samples_to_logger", log_samples_to_logger)
        check_non_negative("log_images_to_logger", log_images_to_logger)
        check_output_dir(Path(output_dir))
        if isinstance(stall_timeout, bool) or not isinstance(stall_timeout, (int, float)) or not stall_timeout > 0:
            raise InputError(f"evaluation.stall_timeout: expected a positive number of seconds, got {stall_timeout!r}")
        if layout not in LAYOUTS:
            raise InputError(f"evaluation.layout: expected one of {list(LAYOUTS)}, got {layout!r}")
        if cache_dir is not None:
            check_output_dir(Path(cache_dir))
        if isinstance(judge_batch_size, bool) or not isinstance(judge_batch_size, int) or judge_batch_size < 1:
            raise InputError(f"evaluation.judge_batch_size: expected a positive integer, got {judge_batch_size!r}")
        self.judge = judge
        self.plots = plots
        self.judge_batch_size = judge_batch_size
        self.output_dir = Path(output_dir)
        self.layout = layout
        self.predict_only = predict_only
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.run_dir = self.output_dir  # where this run writes: the model's subfolder in lm-eval's layout
        self.cache: Optional[ResponseStore] = None
        self.start_time = time.time()
        self.bootstrap_iters = bootstrap_iters
        self.log_samples = log_samples
        self.seed = seed
        self.print_table = print_table
        self.resume = resume
        self.free_model_memory = free_model_memory
        self.log_samples_to_logger = log_samples_to_logger
        self.log_images_to_logger = log_images_to_logger
        self.push_to_hub = push_to_hub
        self.stall_timeout = float(stall_timeout)
        if push_to_hub:
            split_target(push_to_hub)  # a malformed repo id fails now, not after the evaluation
        self.collector: Optional[ResponseCollector] = None
        self.results: Optional[dict[str, Any]] = None  # results.json as written (rank 0)
        self.evaluation_result: Optional[EvaluationResult] = None  # the same, typed (rank 0)
        self.store: Optional[ResponseStore] = None
        self.keys: list[str] = []
        self.resumed: dict[int, Response] = {}
        self.streamed: set[int] = set()  # uids of the current batch stored as they arrived (`store_answer`)
        self.failfast: Optional[FailFast] = None
        self.failure_message: Optional[str] = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Key every request, lock the output folder, and skip what an earlier run answered (the datamodule is set up).

        Every rank agrees on what is skipped (one collective): the union of what the ranks' stores hold, so
        node-local folders resume as a shared one does. The ranks plan the same batches, a request is either
        resumed or computed, never both, and each resumed answer is handed in by one rank (the lowest holding
        it) at the final gather. A second run on the same folder is refused."""
        datamodule = trainer.datamodule
        if not isinstance(datamodule, BenchmarkDataModule):
            raise TypeError("EvaluationCallback needs the Trainer to run a BenchmarkDataModule")
        # Watch the other ranks from here on, and agree on the request list before any collective relies on it.
        self.failfast = FailFast(trainer.global_rank, getattr(trainer.strategy.launcher, "procs", None), self.stall_timeout)
        self.failfast.start()
        check_same_requests(datamodule.requests, trainer.strategy.root_device)
        self.check_judge(datamodule, trainer.global_rank)
        model = config_digest(pl_module.identity() if isinstance(pl_module, EvalModule) else type(pl_module).__name__)
        self.keys = request_keys(datamodule.requests, datamodule.tasks, model)
        if self.store is not None:
            self.store.close()  # this callback ran before in this process
        self.start_time = time.time()
        self.run_dir = self.output_dir / run_folder(pl_module) if self.layout == "lm_eval" else self.output_dir
        self.store = ResponseStore(self.run_dir, trainer.global_rank, model)
        holder = self.store.lock()
        scan = self.store.load() if self.resume else StoreScan()
        stored = scan.reusable(datamodule.requests, self.keys)
        cached = self.cached(datamodule, trainer.global_rank, model)
        found = {**cached, **stored}
        if not is_leader(trainer):  # a tensor-parallel rank that does not store hands in nothing either
            stored, cached = {}, {}
        agreed = agree_across_ranks(holder is None, set(stored), set(cached), len(self.keys), trainer.strategy.root_device)
        if not agreed.locked:
            self.store.close()
            raise AgreedInputError(  # every rank raises it; rank 0 says it
                f"evaluation.output_dir: {self.output_dir} is in use by another run (held by {holder or 'it, on another rank'}); "
                "wait for it to end, or give another --evaluation.output_dir",
                trainer.global_rank,
            )
        self.resumed = {uid: found[uid] for uid in agreed.held_by(trainer.global_rank)}  # this rank hands these in
        datamodule.connect(done_uids=set(agreed.holders))
        if trainer.is_global_zero:
            for message in scan.warnings(self.store.folder):
                warnings.warn(message, StoreWarning)
            if agreed.holders:
                print(f"resumed: {self.describe_resumed(agreed, len(self.keys))}", flush=True)
        self.failfast.phase(LOADING)  # the model loads next (configure_model)
        report_when_loaded(pl_module, self.failfast, datamodule)
        if trainer.loggers:
            # The run's hparams are logged once, at the end with the metrics: TensorBoard keeps a run's first only.
            trainer.enable_autolog_hparams = False

    def check_judge(self, datamodule: BenchmarkDataModule, rank: int) -> None:
        """A judged task needs a judge model, named before the evaluated model loads (every rank says the same)."""
        judged = [name for name, task in datamodule.tasks.items() if task.spec.judge is not None]
        for name in judged:
            try:
                check_judged(datamodule.tasks[name])
            except InputError as err:
                raise AgreedInputError(str(err), rank) from None
        if judged and self.judge is None and not self.predict_only:
            raise AgreedInputError(
                f"task(s) {judged} are scored by a judge model: give one, e.g. --evaluation.judge "
                "lmm_lightning.models.OpenAIModel --evaluation.judge.base_url URL --evaluation.judge.model NAME "
                "(or `eval --judge_model openai --judge_model_args base_url=URL,model=NAME`)", rank,
            )

    def judge_answers(self, datamodule: BenchmarkDataModule, answers: Answers, device: Any) -> Answers:
        """`answers` with the judgements of every judged task (rank 0, after the evaluated model is released)."""
        tasks = {name: task for name, task in datamodule.tasks.items() if task.spec.judge is not None}
        if not tasks or self.predict_only:
            return answers
        kept, _ = check_exactly_once(datamodule.requests, answers)
        doc_responses: dict[str, dict[int, list[Response]]] = {name: {} for name in tasks}
        for request in sorted(datamodule.requests, key=lambda r: (r.repeat, r.choice_index)):
            if request.task in tasks and request.uid in kept:
                doc_responses[request.task].setdefault(request.doc_id, []).append(kept[request.uid])
        docs = {name: datamodule.documents[name].docs for name in tasks}
        judge = Judge(self.judge, self.run_dir, self.judge_batch_size, device)
        try:
            judgements = judge.run(tasks, docs, doc_responses)
        finally:
            judge.release()
        identity = {"class": type(self.judge).__name__, **dict(self.judge.hparams)}  # no file lists, never a key
        for name, by_doc in judgements.items():
            summary = judging_summary(by_doc, identity)
            print(f"judged {name}: {summary.documents} documents, {summary.asked} by the judge ({summary.resumed} "
                  f"resumed), {summary.by_rule} by rule", flush=True)
            if summary.unparsed:
                warnings.warn(f"{name}: the judge's answer to {summary.unparsed} document(s) could not be parsed "
                              f"(doc_id {summary.unparsed_doc_ids[:10]}); they are not scored (results.json "
                              f"judge.{name}.unparsed)", JudgeWarning)
        return replace(answers, judgements=judgements, judge=identity)

    def describe_resumed(self, agreed: Agreement, n_requests: int) -> str:
        """`reused 40 of 52 requests (30 from <store>, 10 from <cache>)`; with node-local folders, also how many
        were found only on other ranks (their own folders of the same name), which hand them in at the gather."""
        n = len(agreed.holders)
        sources = [(n - len(agreed.from_cache), self.store), (len(agreed.from_cache), self.cache)]
        where = ", ".join(f"{count} from {store.folder}" for count, store in sources if count)
        others = sorted(rank for rank in agreed.holders.values() if rank != 0)
        if others:
            ranks = sorted(set(others))
            where += f"; {len(others)} of them held by rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
        return f"reused {n} of {n_requests} requests ({where})"

    def cached(self, datamodule: BenchmarkDataModule, rank: int, model: str) -> dict[int, Response]:
        """The answers the shared cache (`cache_dir`) holds for this run's requests; the cache is opened for appending."""
        if self.cache is not None:
            self.cache.close()
        self.cache = None
        if self.cache_dir is None:
            return {}
        self.cache = ResponseStore(self.cache_dir, rank, model)  # not locked: runs share it, appending whole batches
        return self.cache.load().reusable(datamodule.requests, self.keys)

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: RequestBatch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.current_batch = batch
        self.streamed = set()
        if isinstance(pl_module, EvalModule):
            pl_module.answer_sink = lambda index, response: self.store_answer(trainer, batch, index, response)
        self.failfast.batch_started(describe_batch(batch.requests))

    def store_answer(self, trainer: Trainer, batch: RequestBatch, index: int, response: Response) -> None:
        """One answer stored as it arrives (a served model's paid request), on its own; the batch's end
        stores only the rest. Padding is never stored, and a tensor-parallel follower stores nothing."""
        if batch.padding[index] or not is_leader(trainer) or response.uid in self.streamed:
            return
        check_response(trainer.lightning_module, batch.requests[index], response)
        self.keep([(self.keys[response.uid], response)])
        self.streamed.add(response.uid)

    def keep(self, items: list[tuple[str, Response]]) -> None:
        """Append answers to the run's store, and to the shared cache where there is one."""
        self.store.append(items)
        if self.cache is not None:
            self.cache.append(items)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Name the rank, task, documents and cause, and tell the other ranks to stop.

        An error every rank raised together needs no telling. A collective that broke because another rank
        went away is that rank's story: the watcher names it (and ends the process) rather than us blaming
        this rank for a gloo error."""
        batch = getattr(self, "current_batch", None)
        where = f" on {describe_batch(batch.requests)}" if batch is not None else ""
        message = f"rank {trainer.global_rank} failed{where}: {type(exception).__name__}: {exception}"
        self.failure_message = message
        unwrap_loading(pl_module)
        if self.failfast is None:
            return
        if isinstance(exception, AgreedInputError):
            self.failfast.close()
            return
        if is_communication_error(exception):
            self.failfast.wait_for_cause()
        self.failfast.report(message, EXIT_INPUT_ERROR if isinstance(exception, InputError) else EXIT_FAILURE)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.collector = ResponseCollector().to(pl_module.device)
        self.collector.update(list(self.resumed.values()), [False] * len(self.resumed), resumed=True)  # even if none
        self.results = self.evaluation_result = None
        self.failfast.install_signal_handler()  # again: Lightning put its own SIGTERM handler in front of ours
        self.failfast.phase(PREDICTING)

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: list[Response], batch: RequestBatch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.current_batch = None
        if isinstance(pl_module, EvalModule):
            pl_module.answer_sink = None
        # The ranks of a tensor-parallel group all answer the same batch: one of them (the leader) stores and hands
        # it in, the others hand in nothing, so the gather holds each answer once.
        outputs, padding = (outputs, list(batch.padding)) if is_leader(trainer) else ([], [])
        finished = [(self.keys[r.uid], r) for r, pad in zip(outputs, padding) if not pad and r.uid not in self.streamed]
        self.keep(finished)
        self.collector.update(outputs, padding)
        self.failfast.batch_done()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for store in (self.store, self.cache):
            if store is not None:
                store.close()
        unwrap_loading(pl_module)
        if self.failfast is not None and self.failure_message is None:
            self.failfast.close()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.failfast.phase(GATHERING)
        gathered = self.collector.compute()  # a collective: every rank takes part
        self.failfast.stop()  # every rank got here; from now on a rank may exit early
        prompt = None
        if self.layout == "lm_eval" and trainer.is_global_zero:
            prompt = prompt_function(pl_module, trainer.datamodule.requests, trainer.datamodule.documents)
        if self.free_model_memory and isinstance(pl_module, EvalModule):
            pl_module.release()
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        answers = self.judge_answers(datamodule, Answers(gathered.pairs, gathered.resumed), pl_module.device)
        settings = self.settings(datamodule, pl_module, trainer.world_size)
        result = self.evaluation_result = evaluate(Benchmark.from_datamodule(datamodule), answers, settings)
        if self.layout == "lm_eval":
            info = self.run_info(pl_module)
            self.results = write_lm_eval_outputs(self.run_dir, result, info, self.log_samples, prompt)
            files = [self.results["results_file"], *self.results["samples_files"]]
        else:
            self.results = write_outputs(self.output_dir, result, self.log_samples)
            files = ["results.json", *self.results["samples_files"]]
            if self.plots:
                draw_plots(self.output_dir, self.results)
        if self.print_table and not self.predict_only:
            print(format_table(result), flush=True)
        log_results(trainer.loggers, result, datamodule.documents, self.log_samples_to_logger, self.log_images_to_logger)
        if self.push_to_hub:
            if self.layout == "lm_eval":  # a dataset card, as lm-eval's hub logger writes one
                write_atomic(self.run_dir / "README.md", dataset_card(self.results, format_table(result)))
                files.append("README.md")
            print(f"pushed results to {push_results(self.run_dir, self.push_to_hub, files)}", flush=True)

    def run_info(self, pl_module: LightningModule) -> RunInfo:
        """The run as lm-eval's results file describes it (model, chat template, times)."""
        hparams = dict(getattr(pl_module, "hparams", {}))
        tokenizer = getattr(pl_module, "tokenizer", None) or getattr(getattr(pl_module, "processor", None), "tokenizer", None)
        template = getattr(tokenizer, "chat_template", None) if hparams.get("use_chat_template") else None
        return RunInfo(
            model_source=type(pl_module).__name__,
            model_name=model_name(hparams, type(pl_module).__name__),
            system_instruction=hparams.get("system_prompt"),
            chat_template=template if isinstance(template, str) else None,
            start_time=self.start_time,
            end_time=time.time(),
            predict_only=self.predict_only,
        )

    def settings(self, datamodule: BenchmarkDataModule, pl_module: LightningModule, world_size: int) -> Settings:
        """This run as scoring and results.json see it."""
        return Settings(
            bootstrap_iters=0 if self.predict_only else self.bootstrap_iters,  # no intervals nobody reads
            seed=self.seed,
            model=type(pl_module).__name__,
            model_args=dict(getattr(pl_module, "hparams", {})),
            batch_size=datamodule.batch_size,
            limit=datamodule.limit,
            offset=datamodule.offset,
            world_size=world_size,
            model_source=model_source(pl_module),
        )
