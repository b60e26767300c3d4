"""What every tab shares: the app settings (from the environment), the model catalog, the optional classifier and
real data, and `handler()`, which turns a library-level callback into a Gradio event function.

Nothing here loads a model or imports torch at import time, so the app starts serving quickly.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from demo.app.catalog import PRECISIONS, Catalog
from demo.core.card import generator_init
from demo.core.paths import CLASSIFIER_DIR, DEFAULT_RUNS_DIR, RUNS_ENV
from demo.core.validate import (
    DEFAULT_MAX_WORK,
    DEFAULT_TIMEOUT_S,
    check_device,
    check_work,
    env_choice,
    env_float,
    env_folder,
    env_int,
    public_text,
    time_limit,
)

DATASET_PACKAGE = "dataset-fashion-mnist"
DATASET_COMMAND = f"sudo apt-get install -y {DATASET_PACKAGE}"
USER_ERRORS = (ValueError,)  # ModelFolderError is a ValueError
ERROR_SECONDS = 8  # an error toast fades instead of outliving a later success
PRESET_NOTE = "Presets: one click loads a telling view; its first result was computed when the server started."

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppSettings:
    """App configuration; `from_env()` reads the `GDL_*` variables (model roots are read by `demo.app.catalog`)."""

    model_roots: tuple[str, ...] | None = None  # None: assets/models, runs/ and GDL_MODEL_ROOTS
    device: str | None = None  # None: cuda when available, else cpu
    classifier_dir: str = str(CLASSIFIER_DIR)
    data_dir: str | None = None  # Fashion-MNIST IDX folder; None: demo.core.data's default / FASHION_MNIST_DIR
    cache_size: int = 4  # loaded models kept in memory
    concurrency: int = 2  # sampling jobs running at once
    queue_max_size: int = 32
    max_batch: int = 64
    allow_hub: bool = False
    precision: str = "fp32"  # "bf16": sample under bfloat16 autocast, ~1.6x faster on a CPU, not bit-identical to fp32
    max_work: int = DEFAULT_MAX_WORK  # network evaluations × images per request (raise it on a GPU host)
    request_timeout: float = DEFAULT_TIMEOUT_S  # seconds before a sampling request is stopped and its slot freed
    max_upload_mb: float = 5.0  # largest file /gradio_api/upload accepts

    def __post_init__(self):
        for name, value, lo, hi in (
            ("cache_size (GDL_CACHE_SIZE)", self.cache_size, 1, 64),
            ("concurrency (GDL_CONCURRENCY)", self.concurrency, 1, 64),
            ("queue_max_size (GDL_QUEUE_MAX_SIZE)", self.queue_max_size, 1, 10_000),
            ("max_batch (GDL_MAX_BATCH)", self.max_batch, 1, 256),
            ("max_work (GDL_MAX_WORK)", self.max_work, 1, 10**9),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be a whole number in {lo}..{hi}, got {value!r}")
        if not 1 <= self.request_timeout <= 86_400:
            raise ValueError(f"request_timeout (GDL_REQUEST_TIMEOUT) must be in 1..86400 seconds, got {self.request_timeout!r}")
        if not 0.001 <= self.max_upload_mb <= 10_000:
            raise ValueError(f"max_upload_mb (GDL_MAX_UPLOAD_MB) must be in 0.001..10000, got {self.max_upload_mb!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision (GDL_PRECISION) must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def from_env(cls) -> AppSettings:
        """The settings from GDL_* variables; a bad one is a ValueError naming the variable and its accepted values."""
        env = os.environ
        device = env.get("GDL_DEVICE", "").strip() or None
        if device is not None:
            try:
                device = check_device(device)
            except ValueError as e:
                raise ValueError(f"GDL_DEVICE: {e}") from None
        env_folder(RUNS_ENV, DEFAULT_RUNS_DIR)  # the job store and finished runs live here: it must be writable
        for root in env.get("GDL_MODEL_ROOTS", "").split(os.pathsep):
            if "\0" in root or len(root) > 4096:
                raise ValueError("GDL_MODEL_ROOTS must be folder paths separated by the OS path separator.")
        return cls(
            device=device,
            classifier_dir=env.get("GDL_CLASSIFIER_DIR", str(CLASSIFIER_DIR)),
            data_dir=env.get("GDL_DATA_DIR") or None,
            cache_size=env_int("GDL_CACHE_SIZE", 4, 1, 64),
            concurrency=env_int("GDL_CONCURRENCY", 2, 1, 64),
            queue_max_size=env_int("GDL_QUEUE_MAX_SIZE", 32, 1, 10_000),
            max_batch=env_int("GDL_MAX_BATCH", 64, 1, 256),
            allow_hub=env_choice("GDL_ALLOW_HUB", "0", ("0", "1")) == "1",
            precision=env_choice("GDL_PRECISION", "fp32", PRECISIONS),
            max_work=env_int("GDL_MAX_WORK", DEFAULT_MAX_WORK, 1, 10**9),
            request_timeout=env_float("GDL_REQUEST_TIMEOUT", DEFAULT_TIMEOUT_S, 1.0, 86_400.0),
            max_upload_mb=env_float("GDL_MAX_UPLOAD_MB", 5.0, 0.001, 10_000.0),
        )

    def budget_note(self) -> str:
        """The per-request limits, stated next to the controls they bound."""
        return (
            f"Limit per request: {self.max_work:,} network evaluations × images (GDL_MAX_WORK; a guided teacher step is 2, "
            f"a w-conditioned student step 1) and {self.request_timeout:g} s (GDL_REQUEST_TIMEOUT)."
        )


IMAGE_DIR = Path(tempfile.gettempdir()) / "gdl-images"
IMAGE_MAX_AGE = 3600.0  # seconds an image file is kept for the browser to fetch
_last_prune = [0.0]


def image_file(img) -> str:
    """Save a PIL image as a PNG named by its content and return the path Gradio serves it from.

    Gradio caches a returned PIL image in a file named by a hash of its bytes and rewrites that file on every send,
    so sending the same picture twice (a streamed comparison, a repeated click) can truncate it while the browser
    reads it. A file path is instead copied into the cache once and atomically; here the file is also written
    under a temporary name and renamed, so no reader ever sees half of it. Files older than an hour are pruned.
    """
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = buf.getvalue()
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    if now - _last_prune[0] > 600:
        _last_prune[0] = now
        for old in IMAGE_DIR.glob("*.png"):
            try:
                if now - old.stat().st_mtime > IMAGE_MAX_AGE:
                    old.unlink()
            except OSError:
                pass
    path = IMAGE_DIR / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
    try:
        os.utime(path)  # already there: keep it from the next prune
    except FileNotFoundError:
        tmp = IMAGE_DIR / f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)


def shown_image(img, label: str) -> gr.Image:
    """An image update (as a content-named file, `image_file`) whose box fits the picture and leaves room above it for
    the label, so the label does not cover the picture; large pictures get a taller box, up to 640 px."""
    return gr.Image(image_file(img), label=label, height=min(img.height, 640) + 80)


def as_files(out):
    """Replace the PIL images among a callback's outputs by `image_file` paths."""
    from PIL import Image

    if isinstance(out, Image.Image):
        return image_file(out)
    if isinstance(out, tuple | list):
        return type(out)(image_file(o) if isinstance(o, Image.Image) else o for o in out)
    return out


def preset_key(fn, args) -> tuple:
    """A hashable key for `fn` called with `args` as Gradio sends them: 3 and 3.0 alike, lists as tuples, and objects
    Gradio adds (the request, a progress tracker) left out."""

    def norm(v):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int | float):
            return float(v)
        return tuple(norm(x) for x in v)

    return (fn.__name__, tuple(norm(a) for a in args if a is None or isinstance(a, bool | int | float | str | list | tuple)))


def files_present(out) -> bool:
    """Whether every file an output refers to (paths under the temp folder: images, downloads) still exists; the image
    and download folders are pruned after an hour."""
    root = str(IMAGE_DIR.parent)

    def paths(o):
        if isinstance(o, str):
            if o.startswith(root + os.sep) and "\n" not in o:
                yield o
        elif isinstance(o, tuple | list):
            for x in o:
                yield from paths(x)
        elif isinstance(o, dict):
            for x in o.values():
                yield from paths(x)
        elif isinstance(o, gr.components.Component):
            yield from paths(getattr(o, "value", None))

    found = list(paths(out))
    for p in found:
        if not os.path.exists(p):
            return False
        os.utime(p)  # shown again: keep it from the next prune
    return True


def _gpu_decorator():
    """`spaces.GPU` on a ZeroGPU Space, otherwise the identity."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU


class Context:
    def __init__(self, settings: AppSettings | None = None):
        self.settings = settings or AppSettings.from_env()
        s = self.settings
        self.catalog = Catalog(
            s.model_roots, device=s.device, cache_size=s.cache_size, allow_hub=s.allow_hub, precision=s.precision
        )
        self.gpu = _gpu_decorator()
        self.model_dropdowns: list[gr.Dropdown] = []  # refreshed together when the model folders change
        self.on_load: list[tuple] = []  # (event function, outputs) a tab wants run when the page loads
        self._lock = threading.Lock()
        self._classifier = None
        self._stops: dict[str, threading.Event] = {}  # session → the stop flag of its running comparison
        self._load_locks: dict[str, threading.Lock] = {}  # one per model name: a request waits for the preload
        self._seen: dict[int, str] = {}  # ids of the model objects load_timed has returned
        self.preloaded = threading.Event()  # cleared while `start_preload`'s thread runs
        self.preloaded.set()
        # Sampling requests (foreground) and the start-up precomputation of presets (background) never run at once:
        # a request waits for the background's next yield, and the background waits while any request runs.
        self._turn = threading.Condition()
        self._foreground = 0
        self._background_busy = False
        self.preset_jobs: list[tuple[tuple, object, tuple]] = []  # (key, fn, args) registered by `register_presets`
        self.precomputed: dict[tuple, object] = {}  # key → the final outputs of a preset's run

    # ---- loading, timed apart from sampling ----
    def load_timed(self, name) -> tuple[object, float]:
        """(model, seconds this call spent loading it; 0.0 when it was already in memory). Loads of one name are
        serialised, so a request that arrives while `preload` is loading that model waits for it instead of loading
        it a second time."""
        with self._lock:
            lock = self._load_locks.setdefault(str(name), threading.Lock())
        with lock:
            start = time.perf_counter()
            model = self.catalog.load(name)
            elapsed = time.perf_counter() - start
            new = id(model) not in self._seen  # a model object not met before was loaded by this call
            self._seen[id(model)] = model.name
        return model, (elapsed if new else 0.0)

    def start_preload(self, then=None, presets: bool = True, presets_done=None, projection: bool = True) -> threading.Thread:
        """Run `preload` in a daemon thread (`then(spent)` afterwards), compile UMAP (`warm_projection`, unless
        `projection` is False), then `precompute` the presets
        (`presets_done(spent)` afterwards); comparisons wait for the preload (`wait_for_preload`) so that no timed run
        shares the CPU with a warm-up, and the presets are computed only while no request runs."""
        self.preloaded.clear()

        def run():
            spent = self.preload()
            if then is not None:
                then(spent)
            if projection:
                with self._background():  # UMAP's one-off compilation, off the first Embedding's path
                    seconds = self.warm_projection()
                if seconds is not None:
                    logger.info("UMAP compiled in the background in %.1f s", seconds)
            if presets:
                done = self.precompute()
                with self._background():  # the presets' models may have pushed the default pair out of the LRU cache
                    self.preload()
                if presets_done is not None:
                    presets_done(done)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    @staticmethod
    def warm_projection() -> float | None:
        """Seconds UMAP's first (compiling) fit took, or None where umap-learn is not installed."""
        from analysis.projection import warm_up  # cheap: umap itself is imported inside

        try:
            return warm_up()
        except ImportError:
            return None

    def wait_for_preload(self, timeout: float = 120.0) -> None:
        self.preloaded.wait(timeout)

    def preload(self, guidance: float = 2.0) -> dict[str, float]:
        """Load and warm the models the default Compare view needs (`default_pair`), so the first visitor's first
        comparison meets warm models; returns name → seconds. Run it in a background thread after launch: the
        server already answers while this runs."""
        from demo.app import lab

        spent = {}
        try:
            teacher, student = self.default_pair()
            for name, steps in ((student, (self.catalog.entry(student).steps or 64) if student else 0), (teacher, 64)):
                if name:
                    start = time.perf_counter()
                    model, _ = self.load_timed(name)
                    lab.warm_up(model, 1, steps, guidance, "ddim")
                    spent[name] = time.perf_counter() - start
        finally:
            self.preloaded.set()
        return spent

    # ---- the start-up precomputation of presets, kept out of the way of timed requests ----
    @contextlib.contextmanager
    def foreground(self, timeout: float = 60.0):
        """Held by every sampling request: waits until a background preset run has paused at its next yield, and keeps
        the background from starting while the request runs, so timings never include another run's work."""
        with self._turn:
            self._foreground += 1
            self._turn.wait_for(lambda: not self._background_busy, timeout)
        try:
            yield
        finally:
            with self._turn:
                self._foreground -= 1
                self._turn.notify_all()

    @contextlib.contextmanager
    def _background(self):
        with self._turn:
            self._turn.wait_for(lambda: self._foreground == 0)
            self._background_busy = True
        try:
            yield
        finally:
            with self._turn:
                self._background_busy = False
                self._turn.notify_all()

    def register_presets(self, fn, examples: gr.Examples, rows: list, inputs: list, outputs: list, gpu: bool = True, **event):
        """After a click on one of `examples` (whose rows fill `inputs[:len(row)]`) has filled the inputs, run `fn` on
        every input; each row is registered for `precompute`, so its first result is shown at once
        (`precomputed_handler`). `event` holds the event's keyword arguments (api_name, concurrency, js).

        Gradio's own example caching is not used: it keeps results on disk across versions of the app, and in lazy
        mode it failed on component updates such as `gr.Image(path, label=…)` (AttributeError inside Gradio)."""
        for row in rows:
            args = tuple(row) + tuple(c.value for c in inputs[len(row) :])  # the other inputs at their defaults
            self.preset_jobs.append((preset_key(fn, args), fn, args))
        # private: the same function as its tab's button, whose api_name is the public one
        return examples.load_input_event.then(
            self.precomputed_handler(fn, gpu), inputs, outputs, api_visibility="private", **event
        )

    def precomputed_handler(self, fn, gpu: bool = True):
        """`handler(fn)` that answers from `precomputed` when the arguments are a precomputed preset's (and its files
        are still there), else runs `fn`."""
        run = self.handler(fn, gpu)

        def hit(args):
            out = self.precomputed.get(preset_key(fn, args))
            return out if out is not None and files_present(out) else None

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(run)
            def wrapped(*args, **kwargs):
                out = hit(args)
                if out is not None:
                    yield out
                else:
                    yield from run(*args, **kwargs)

        else:

            @functools.wraps(run)
            def wrapped(*args, **kwargs):
                out = hit(args)
                return out if out is not None else run(*args, **kwargs)

        wrapped.__signature__ = run.__signature__
        return wrapped

    def precompute(self, attempts: int = 5) -> dict[tuple, float]:
        """Run every registered preset once, in order, whenever no request is running; a run that a request interrupts
        (it yields between steps or models) is started again later. Returns key → seconds for the finished ones."""
        spent = {}
        for key, fn, args in list(self.preset_jobs):
            for _ in range(attempts):
                if key in self.precomputed:
                    break
                with self._background():
                    start = time.perf_counter()
                    try:
                        out = self._run_until_interrupted(fn, args)
                    except Exception as e:  # noqa: BLE001 (a preset that cannot run is computed on its first click)
                        logger.warning("preset %s could not be precomputed: %s", key[0], public_text(str(e), self.catalog.roots))
                        break
                    if out is not None:
                        self.precomputed[key] = out
                        spent[key] = time.perf_counter() - start
        return spent

    def _run_until_interrupted(self, fn, args):
        """`fn(self, *args)`'s final outputs (as files), or None when a request arrived before it finished."""
        out = fn(self, *args)
        if not inspect.isgenerator(out):
            return as_files(out)
        last = None
        try:
            for last in out:
                if self._foreground:
                    return None
        finally:
            out.close()
        return as_files(last)

    def data_missing(self) -> str | None:
        """None when the Fashion-MNIST IDX files are installed; otherwise one sentence naming what is missing and the
        command that installs it."""
        from demo.core.data import DEFAULT_DIR, ENV_VAR

        folder = Path(self.settings.data_dir or os.environ.get(ENV_VAR) or DEFAULT_DIR)
        needed = ("t10k-images-idx3-ubyte", "train-images-idx3-ubyte")
        found = all(any(folder.glob(f"{stem}*")) for stem in needed) if folder.is_dir() else False
        if found:
            return None
        return (
            f"The Fashion-MNIST dataset is not installed (looked in {folder}). Install it with "
            f"`{DATASET_COMMAND}` (Debian's `{DATASET_PACKAGE}` package, listed in packages.txt), or point "
            f"GDL_DATA_DIR at a folder holding the IDX files, then restart the app."
        )

    # ---- stopping a streamed run from another request of the same session (the API's /stop_compare) ----
    def stop_flag(self, request) -> threading.Event:
        flag = threading.Event()
        if getattr(request, "session_hash", None):
            self._stops[request.session_hash] = flag
        return flag

    def request_stop(self, request) -> bool:
        flag = self._stops.pop(getattr(request, "session_hash", None), None)
        if flag is not None:
            flag.set()
        return flag is not None

    def release_stop(self, request, flag: threading.Event) -> None:
        if self._stops.get(getattr(request, "session_hash", None)) is flag:
            del self._stops[request.session_hash]

    # ---- optional assets: each missing one is a sentence, not a crash ----
    def classifier(self):
        """(classifier or None, message or None)."""
        path = Path(self.settings.classifier_dir) / "model.safetensors"
        if not path.is_file():
            return None, f"The feature classifier is missing at {path}, so classifier-based numbers are not shown."
        with self._lock:
            if self._classifier is None:
                from analysis.classifier import load_classifier

                self._classifier = load_classifier(self.settings.classifier_dir, device=self.catalog.device)
        return self._classifier, None

    def real_images(self, n: int, seed: int):
        """(x0, labels) of real test images, or None when the dataset is absent."""
        from demo.core.data import reference_images

        try:
            return reference_images(n, seed, folder=self.settings.data_dir)
        except (FileNotFoundError, ValueError):
            return None

    # ---- model lists for dropdowns ----
    def model_names(self) -> list[str]:
        return self.catalog.names()

    def default_model(self, kind: str, steps: int | None = None, method: str | None = None) -> str | None:
        """The first model of `kind` (any model when there is none), preferring one trained by `method` and distilled
        for `steps` steps, then one by `method`, then one distilled for `steps` steps; class-conditional models before
        text-conditional ones (the tabs open on the class picker and the Fashion-MNIST metrics)."""
        entries = [e for e in self.catalog.entries() if e.kind == kind] or self.catalog.entries()
        entries = sorted(entries, key=_entry_is_text)  # stable: the catalog's order otherwise
        by_method = [e for e in entries if method is not None and e.method == method]
        by_steps = [e for e in entries if steps is not None and e.steps == steps]
        both = [e for e in by_method if e in by_steps]
        return (both or by_method or by_steps or entries)[0].name if entries else None

    def sketch_of(self, refined: str | None) -> str | None:
        """The one-step sketch an HD model was refined from (its card's `training.generator_init`, e.g. the 1-step
        progressive student) when installed, else a model trained as `hd-sketch`, else None."""
        entries = self.catalog.entries()
        init = generator_init(next((e.card for e in entries if e.name == refined), {}))
        if init in {e.name for e in entries if e.kind == "student" and e.steps == 1}:
            return init
        return next((e.name for e in entries if e.method == "hd-sketch"), None)

    def teacher_of(self, model: str | None) -> str | None:
        """The teacher a model's card names (the model it was distilled from) when the catalog holds it, else None
        (`Catalog.teacher_of`: the one rule, `demo.core.card.teacher_folder`)."""
        return self.catalog.teacher_of(model) if model else None

    def default_pair(self, steps: int = 4) -> tuple[str | None, str | None]:
        """(teacher, student) a tab opens with: the first `steps`-step student and the teacher its card names, or the
        first teacher when that one is not installed."""
        student = self.default_model("student", steps=steps)
        return self.teacher_of(student) or self.default_model("teacher"), student

    def default_teacher(self) -> str | None:
        """The teacher every tab opens on: the one the default student's card names (`default_pair`), so no tab
        measures students against a teacher they were not distilled from."""
        return self.default_pair()[0]

    def telling_students(self, methods=("dash", "kd-cond", "kd-composite"), limit: int = 3) -> list[str]:
        """A small default selection for the analysis tabs: one installed student per method in `methods` (DASH and
        its baselines show branch collapse best), else the first students; at most `limit`."""
        entries = sorted((e for e in self.catalog.entries() if e.kind == "student"), key=_entry_is_text)
        picked = [next(e.name for e in entries if e.method == m) for m in methods if any(e.method == m for e in entries)]
        picked += [e.name for e in entries if e.name not in picked]
        return picked[:limit]

    def has_method(self, method: str) -> bool:
        return any(e.method == method for e in self.catalog.entries())

    def is_text_model(self, name) -> bool:
        """Whether a listed model (or path inside the roots) is text-conditional, from its card or its folder alone."""
        try:
            return _entry_is_text(self.catalog.entry(name))
        except (ValueError, OSError):
            return False

    def class_choices(self, with_all: bool = True) -> list[tuple[str, str]]:
        entries = self.catalog.entries()
        names = entries[0].card.get("class_names") if entries else None
        names = names or [str(i) for i in range(10)]
        choices = [(f"{i} · {n}", str(i)) for i, n in enumerate(names)]
        return ([("all classes", "all")] if with_all else []) + choices

    def model_dropdown(self, label: str, value=None, multiselect: bool = False, **kwargs) -> gr.Dropdown:
        """A dropdown over the catalog that also accepts a typed path inside the allowed roots."""
        dd = gr.Dropdown(
            choices=self.model_names(), value=value, label=label, multiselect=multiselect, allow_custom_value=True, **kwargs
        )
        self.model_dropdowns.append(dd)
        return dd

    def check_work(self, cost: int, what: str) -> None:
        """Refuse a request above the per-request budget (`AppSettings.max_work`) before any model runs."""
        check_work(int(cost), self.settings.max_work, what)

    def public_error(self, e: Exception) -> gr.Error:
        """A library error as the user sees it: its sentence, with server paths relative to the model or runs roots."""
        return gr.Error(public_text(str(e), [*self.catalog.roots, IMAGE_DIR]), duration=ERROR_SECONDS, print_exception=False)

    def handler(self, fn, gpu: bool = False):
        """`fn(ctx, *inputs)` → a Gradio event function: ctx bound, library errors turned into `gr.Error` (without
        server paths), PIL images handed to Gradio as content-named PNG files (`image_file`), and sampling stopped
        after `settings.request_timeout` seconds (`demo.core.validate.time_limit`; the slot is freed at once).

        The returned function keeps `fn`'s parameter names (minus `ctx`), which become the API's keyword names.
        """
        bound = functools.partial(fn, self)
        timeout = self.settings.request_timeout
        turn = self.foreground if gpu else contextlib.nullcontext  # sampling waits for a precomputing preset to pause
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def wrapped(*args, **kwargs):
                end = time.monotonic() + timeout
                try:
                    with turn():
                        outputs = bound(*args, **kwargs)
                        try:
                            while True:
                                with time_limit(timeout, end):  # each step may run in another worker thread
                                    out = next(outputs, StopIteration)
                                if out is StopIteration:
                                    return
                                yield as_files(out)
                        finally:
                            outputs.close()  # a cancelled request stops its sampling thread now, not at garbage collection
                except USER_ERRORS as e:
                    raise self.public_error(e) from None

        else:

            @functools.wraps(fn)
            def wrapped(*args, **kwargs):
                try:
                    with turn(), time_limit(timeout):
                        return as_files(bound(*args, **kwargs))
                except USER_ERRORS as e:
                    raise self.public_error(e) from None

        sig = inspect.signature(fn)
        wrapped.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
        return self.gpu(wrapped) if gpu else wrapped


def _entry_is_text(entry) -> bool:
    """A catalog entry is text-conditional: its card says so, or its folder has a text encoder (a card-less SD folder)."""
    from demo.core.text import is_text_folder

    return entry.card.get("conditioning") == "text" or is_text_folder(entry.path)


def prompt_boxes(visible: bool = False):
    """The prompt and negative-prompt boxes that replace a tab's class picker for a text-conditional model, in a row
    whose visibility follows the model (`conditioning_view`, `prompt_view`). Returns (row, prompt, negative prompt)."""
    with gr.Row(visible=visible) as row:
        prompt = gr.Textbox(
            "",
            label="Prompt",
            lines=2,
            max_lines=8,
            placeholder="one prompt per line, e.g. a dark sandal",
            info="text-conditional models: the images cycle through the lines",
        )
        negative = gr.Textbox(
            "", label="Negative prompt", placeholder="empty: the empty prompt", info="the unconditional branch of CFG"
        )
    return row, prompt, negative


def conditioning_view(ctx, model):
    """(class picker, prompt boxes) visibility for the model a tab samples: the prompts replace the class picker for a
    text-conditional model."""
    text = isinstance(model, str) and bool(model) and ctx.is_text_model(model)
    return gr.update(visible=not text), gr.update(visible=text)


def prompt_view(ctx, models):
    """The prompt boxes show when any of the chosen models is text-conditional (the class picker stays for the others)."""
    names = models if isinstance(models, list) else [models]
    return gr.update(visible=any(isinstance(m, str) and m and ctx.is_text_model(m) for m in names))


def conditioning(model, class_label, prompt, negative_prompt, first: bool = False) -> tuple[object, dict]:
    """(class label, keyword arguments for `SamplingRequest.check`) from a tab's class picker and prompt boxes: a text
    model takes the prompt lines ('all' cycles through them; with `first`, a view of one image per setting, the first
    line) and the negative prompt; a class-conditional model the class label, and the (hidden) prompt boxes are
    ignored."""
    if not getattr(model, "is_text", False):
        return class_label, {}
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"prompt must be a text, one prompt per line, got {type(prompt).__name__}")
    lines = [line.strip() for line in (prompt or "").splitlines() if line.strip()]
    return 0 if first else "all", {"prompt": lines or None, "negative_prompt": negative_prompt or ""}
