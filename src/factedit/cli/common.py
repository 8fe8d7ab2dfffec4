"""Options and error handling shared by every command.

Exit codes: 0 success, 1 a quality gate failed, 2 usage or input error (a
:class:`~factedit.errors.FactEditError`), 130 interrupted.

Start-up: ``factedit --help``, ``factedit edit validate`` and ``factedit models list`` never
import torch or transformers. The CLI modules import only light modules (typer, rich, yaml,
:mod:`factedit.spec`) at module level; what needs torch is imported when a command runs,
through :class:`LazyImports` or inside the function. ``tests/unit/test_cli_startup.py`` checks
it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from factedit.console import err_console, info
from factedit.errors import FactEditError, SpecError
from factedit.spec import EditSpec
from factedit.stats.choice import CorpusChoice, check_corpus

if TYPE_CHECKING:
    from factedit.models.loading import LoadedModel

F = TypeVar("F", bound=Callable)

# Constants that option declarations need before any command runs, copied from modules that
# import torch; tests/unit/test_cli_startup.py checks that they still agree.
#: factedit.evaluate.metrics.METRIC_KEYS
METRIC_KEYS: tuple[str, ...] = (
    "s",
    "es",
    "ps",
    "ns",
    "em",
    "pm",
    "nm",
    "gen_es",
    "gen_ps",
    "gen_ns",
    "ge",
    "mention_new",
    "mention_true",
    "efficacy",
    "paraphrase",
    "specificity",
)

#: factedit.evaluate.greedy.ANSWER_TOKENS
ANSWER_TOKENS = 12
#: factedit.evaluate.perplexity.HELDOUT_TOKENS
HELDOUT_TOKENS = 2048


def load_model(reference: str | None = None, **kwargs: Any) -> LoadedModel:
    """:func:`factedit.models.load_model`, imported on first use (it imports torch)."""
    from factedit.models.loading import load_model as load

    return load(reference, **kwargs)


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Preset name, Hugging Face hub id, local model directory or .gguf file "
        "(default: the spec's model, else gemma-3-270m).",
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="cpu, cuda, cuda:N or auto. On the CPU every core the process is given is used "
        "(its CPU affinity); OMP_NUM_THREADS=N chooses.",
    ),
]
DeviceMapOpt = Annotated[
    str | None,
    typer.Option(
        "--device-map",
        help="Spread the layers over devices with accelerate: auto (or balanced, sequential) "
        'or a JSON object {"module": device}; layers that do not fit go to the CPU or the '
        "disk (edited layers must sit on a device). Overrides the spec's device_map.",
    ),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--max-memory", help="With --device-map: caps per device, e.g. 0=20GiB,cpu=60GiB."
    ),
]
DtypeOpt = Annotated[
    str, typer.Option("--dtype", help="Model dtype: float32, bfloat16 or float16.")
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code", help="Allow a hub model's own Python code (off by default)."
    ),
]


MethodOpt = Annotated[
    str | None,
    typer.Option(
        "--method",
        help="Editing method: rome, memit, alphaedit or emmet (default: the spec's, rome).",
    ),
]
LayersOpt = Annotated[
    str | None,
    typer.Option("--layers", help='Layer(s) to edit, e.g. "4", or "auto" (default: the spec\'s).'),
]


def parse_layers(text: str | None) -> tuple[int, ...] | str | None:
    """``--layers``: ``"auto"``, ``"4"`` or ``"4,5"`` -> "auto" / (4,) / (4, 5); None stays None.

    Anything else (not integers, negative or repeated indices) is a :class:`SpecError`.
    """
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return "auto"
    try:
        layers = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SpecError(
            f'--layers must be "auto" or integers like "4" or "4,5"; got "{text}"'
        ) from None
    if not layers or any(x < 0 for x in layers) or len(set(layers)) != len(layers):
        raise SpecError(f'--layers "{text}": give distinct non-negative layer indices or "auto"')
    return layers


CorpusOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--corpus",
        help='Corpus for the statistics C: .txt, or .jsonl with a "text" field '
        '(repeatable), or "model" to sample one from the model. Default: $FACTEDIT_CORPUS, '
        "else WikiText-103 (cached, or downloaded with `datasets` when online), else text "
        "sampled from the model.",
    ),
]


def announce_corpus(corpus: list[str] | None, hparams=None) -> CorpusChoice:
    """Decide the statistics corpus before any model loads (a named file that does not exist
    fails here, in a second) and say which one it is and why."""
    choice = check_corpus(corpus, hparams)
    info(choice.describe())
    return choice


def load_spec_model(
    reference: str | None,
    spec: EditSpec,
    *,
    device: str,
    dtype: str,
    trust_remote_code: bool,
    device_map: str | None = None,
    max_memory: str | None = None,
) -> LoadedModel:
    """:func:`factedit.models.loading.load_for_spec`, imported on first use (torch), with
    ``--device-map`` / ``--max-memory`` as given on the command line."""
    from factedit.models.loading import load_for_spec

    dm, mm = parse_placement(device_map, max_memory)
    return load_for_spec(
        reference, spec, device=device, dtype=dtype, trust=trust_remote_code,
        device_map=dm, max_memory=mm,
    )  # fmt: skip


def parse_placement(device_map: str | None, max_memory: str | None) -> tuple[Any, Any]:
    """(device map, max memory) from ``--device-map`` / ``--max-memory``; a bad value is a
    usage error (:mod:`factedit.models.placement`)."""
    from factedit.models.placement import parse_device_map, parse_max_memory

    try:
        return parse_device_map(device_map), parse_max_memory(max_memory)
    except ValueError as exc:
        raise FactEditError(str(exc)) from None


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr, one ``error:`` line per line of ``message`` (a
    SpecError listing several problems: its ``FILE: N problems`` line, then one per problem),
    and return the Exit to raise.

    ``message`` is plain text: brackets in it (a path like ``runs[2]/out``) are printed as is.
    """
    for line in message.splitlines() or [message]:
        err_console.print(f"[bold red]error:[/bold red] {escape(line)}", soft_wrap=True)
    return typer.Exit(code)


def cli_errors(fn: F) -> F:
    """Turn FactEditError into ``error:`` lines and exit 2; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FactEditError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted; nothing half-written was left behind", 130) from None

    return wrapper  # type: ignore[return-value]
