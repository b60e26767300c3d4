"""Training methods behind one interface (`base.Method`) and their registry: teacher training and the distillation
methods, one file each, every one runnable as `python -m demo.distill --method NAME` through the one loop in
`demo.distill.train`. Every method runs on a pixel UNet teacher and on a latent DiT teacher alike: the data reach a latent
teacher's methods as VAE latents (`demo.core.latent.model_space`).

How to add a method — write one file, nothing else:

    # demo/distill/mine.py  (or any file named in GDL_METHOD_MODULES, see below)
    from demo.distill import load_teacher, register, teacher_data
    from demo.distill.base import Method, student_card

    @register
    class MyDistillation(Method):
        cli = {"mine": "one line on what it trains"}   # --method names → description (--help, the card)
        summary = "mine: a short phrase"               # the app's method dropdown

        @classmethod
        def add_arguments(cls, parser):                 # this method's own flags (argparse's add_argument)
            parser.add_argument("--my-weight", type=float, default=1.0, help="…")

        @classmethod
        def from_args(cls, method, args):               # parsed command line → the method
            teacher = load_teacher(args)
            return cls(teacher, teacher_data(args, teacher), args.my_weight, name=args.name)

        def __init__(self, teacher, data, my_weight, name=None): …   # set self.teacher, self.student, self.card_name
        def loss(self, step, generator): …              # draw the batch with self.data.batch(step), noise from generator
        def card(self, cfg):
            return student_card(self.teacher, self.card_name, self.name, self.training_record(cfg), self.cli[self.name])

The registry imports every module of this package (`pkgutil`) the first time `METHODS` is read, so the file's
`@register` is all the wiring: the CLI gains `--method mine` and its flags, the app's Distill tab lists it, jobs can
run it. `Method` supplies the rest: the export of the (EMA) student as a model folder on the teacher's scheduler and
VAE, checkpoints, and — for a method that trains a second network (HD's fake score) — its optimiser: declare it in
`auxiliary()` and yield its losses from `auxiliary_losses()`; the loop steps, syncs and checkpoints it. One file may
register a family of names (`cli` with several keys, e.g. DASH's ablations); `from_args` gets the chosen name.
Flags are shared by name: a flag two methods declare the same way (destination and default) is one flag.

Plugins and tests: `GDL_METHOD_MODULES` lists more method files or modules, separated by `os.pathsep` (`:`), e.g.
`GDL_METHOD_MODULES=/path/to/mine.py:mypackage.methods`; each is imported at discovery and registers itself the same way.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PLUGIN_ENV = "GDL_METHOD_MODULES"
_NOT_METHOD_MODULES = {"base", "__main__", "train", "checkpoint"}  # the loop and its formats, not methods


@dataclass(frozen=True)
class MethodEntry:
    """One `--method` name: its class and description. Calling it with the parsed command line builds the method."""

    name: str
    cls: type
    description: str

    def __call__(self, args: argparse.Namespace):
        return self.cls.from_args(self.name, args)

    @property
    def needs_teacher(self) -> bool:
        return self.cls.needs_teacher


_ENTRIES: dict[str, MethodEntry] = {}
_CLASSES: list[type] = []  # registration order: one per file or family, as their flags and help are grouped


def register(cls: type) -> type:
    """Class decorator: register every name in `cls.cli` (a family may register several) for `--method`."""
    if not cls.cli:
        raise ValueError(f"{cls.__name__} registers no method: set cli = {{'name': 'description'}}")
    for name, description in cls.cli.items():
        if name in _ENTRIES and _ENTRIES[name].cls is not cls:
            other = _ENTRIES[name].cls
            raise ValueError(
                f"method {name!r} is registered twice: by {other.__module__}.{other.__name__} and {cls.__module__}.{cls.__name__}"
            )
        _ENTRIES[name] = MethodEntry(name, cls, description)
    if cls not in _CLASSES:
        _CLASSES.append(cls)
    return cls


def _discover() -> None:
    """Import this package's method modules, then the GDL_METHOD_MODULES ones (each registers itself)."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_METHOD_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    for item in filter(None, os.environ.get(PLUGIN_ENV, "").split(os.pathsep)):
        _import_plugin(item)


def _import_plugin(item: str) -> None:
    """A path to a .py file, or a dotted module name."""
    if not item.endswith(".py"):
        importlib.import_module(item)
        return
    path = Path(item).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{PLUGIN_ENV} names {item}, which is not a file")
    module_name = f"gdl_method_plugin_{path.stem}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before exec: dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)


class _Registry(Mapping):
    """`METHODS`: `--method` name → `MethodEntry`, filled by discovery the first time it is read."""

    _discovered = False

    def _entries(self) -> dict[str, MethodEntry]:
        if not _Registry._discovered:
            _Registry._discovered = True
            _discover()
        return _ENTRIES

    def __getitem__(self, name: str) -> MethodEntry:
        return self._entries()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())

    def families(self) -> list[type]:
        """The registered method classes in registration order (one per file or family)."""
        self._entries()
        return list(_CLASSES)


METHODS = _Registry()


def method_summary() -> str:
    """One line over every family (what the app's method dropdown shows under it)."""
    return " · ".join(cls.summary for cls in METHODS.families() if cls.summary)


def _method_files() -> list[Path]:
    files = [
        Path(info.module_finder.path) / f"{info.name}.py"
        for info in pkgutil.iter_modules(__path__)
        if info.name not in _NOT_METHOD_MODULES and not info.name.startswith("_")
    ]
    for item in filter(None, os.environ.get(PLUGIN_ENV, "").split(os.pathsep)):
        spec = None if item.endswith(".py") else importlib.util.find_spec(item)
        files.append(Path(item) if spec is None else Path(spec.origin))
    return [f for f in files if f.is_file()]


def method_catalog() -> tuple[list[str], str]:
    """(every `--method` name, sorted; the families' summaries in one line) read from the method files' source, not
    by importing them: the app builds its Distill tab from this without importing the model stack (diffusers), which
    keeps its cold start short. The same names and summaries as `METHODS` (tests/distill/test_methods.py checks)."""
    names, summaries = [], []
    for path in _method_files():
        tree = ast.parse(path.read_text(), str(path))
        module_dicts = {
            t.id: stmt.value
            for stmt in tree.body
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict)
            for t in stmt.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef) or not any(getattr(d, "id", None) == "register" for d in node.decorator_list):
                continue
            for stmt in node.body:
                target = stmt.targets[0].id if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name) else None
                if target == "cli":  # a dict literal, or a module-level one by name: its keys are the names
                    value = module_dicts.get(stmt.value.id) if isinstance(stmt.value, ast.Name) else stmt.value
                    names += [ast.literal_eval(k) for k in getattr(value, "keys", [])]
                elif target == "summary":
                    summaries.append(ast.literal_eval(stmt.value))
    return sorted(names), " · ".join(summaries)


# ---- the command line's method flags ----


class MethodArguments:
    """What a method's `add_arguments` receives: argparse's `add_argument` into the method's own help group (a flag
    another method already declared with the same destination and default is shared, not redeclared) and
    `add_check` for a check across flags."""

    def __init__(self, parser: argparse.ArgumentParser, group, checks: list[Callable]):
        self._parser, self._group, self._checks = parser, group, checks

    def add_argument(self, *flags: str, **kwargs):
        known = {o: a for a in self._parser._actions for o in a.option_strings}
        if all(f in known for f in flags):
            action = known[flags[0]]
            dest = kwargs.get("dest", flags[0].lstrip("-").replace("-", "_"))
            if action.dest != dest or action.default != kwargs.get("default"):
                raise ValueError(f"flag {flags[0]} is declared twice with different destinations or defaults")
            return action
        return self._group.add_argument(*flags, **kwargs)

    def add_check(self, check: Callable[[argparse.Namespace], None]) -> None:
        if check not in self._checks:
            self._checks.append(check)


def add_method_arguments(parser: argparse.ArgumentParser) -> list[Callable]:
    """Add every registered method's flags to `parser`, one help group per family; returns the cross-flag checks.

    Every method's flags are accepted whatever `--method` is (as one flat parser did), so a command line that worked
    keeps working, and every check runs."""
    checks: list[Callable] = []
    for cls in METHODS.families():
        about = "; ".join(f"{name}: {description}" for name, description in cls.cli.items())
        group = parser.add_argument_group(f"--method {', '.join(cls.cli)}", about)
        cls.add_arguments(MethodArguments(parser, group, checks))
    return checks


# ---- what the builders share: the teacher, the student initialisation and the training data ----


def load_teacher(args):
    """The loaded `--teacher` model folder (a distillation method cannot start without one). A text-conditional teacher
    comes bound to the caption grammar (`demo.core.captions`: 270 captions, the empty prompt as the null class), so the
    methods' labels are caption indices (`teacher_data`) and every method sees a class-conditional-like model."""
    from demo.core.models import load_model_folder

    if not args.teacher:
        raise ValueError(f"method {args.method} needs --teacher DIR (a teacher model folder)")
    return _bound(load_model_folder(args.teacher))


def _bound(model):
    if model is None or not model.is_text:
        return model
    from demo.core.captions import all_captions

    captions = all_captions()
    return model.with_prompts(captions, "", limit=len(captions))


def load_init(args):
    """The loaded `--init` model folder, or None."""
    from demo.core.models import load_model_folder

    return _bound(load_model_folder(args.init)) if args.init else None


def _train_data(args):
    """Fashion-MNIST's training split, or the user's own images with `--data FILE.npz`."""
    from demo.core.data import BatchSampler, load_fashion_mnist, load_image_arrays

    images, labels = load_image_arrays(args.data) if getattr(args, "data", None) else load_fashion_mnist("train")
    return BatchSampler(images, labels, args.batch_size, seed=args.seed, flip=getattr(args, "hflip", False))


def train_data(args):
    """Training batches in pixel space (through `_train_data`, which a test may replace by a tiny sampler)."""
    return _train_data(args)


def teacher_data(args, teacher):
    """Training batches in the teacher's space: Fashion-MNIST pixels, or their VAE latents for a latent teacher; for a
    text teacher the labels are caption indices (`demo.core.captions.CaptionBatches`)."""
    from demo.core.latent import model_space

    data = train_data(args)
    if getattr(teacher, "is_text", False):
        from demo.core.captions import CaptionBatches

        data = CaptionBatches.of(data, (teacher.card.training or {}).get("captions"))
    return model_space(data, teacher)
