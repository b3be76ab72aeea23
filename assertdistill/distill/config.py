"""RunConfig: one distillation run's settings, each declared once (default, help, group, flags, checks)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass

import yaml

from ..core.paths import DEMO
from ..core.schema import BEST_MODEL_METRICS, DEFAULT_BEST_MODEL_METRIC
from ..data.archive import DEFAULT_MAX_RECORD_BYTES
from ..data.layout import SplitMembers
from ..model.attention import CHOICES as ATTENTION_CHOICES
from ..model.decoding import DecodingSettings
from .divergences import CHOICES as DIVERGENCE_CHOICES
from .divergences import DEFAULT_DIVERGENCE, DEFAULT_JSD_BETA, DEFAULT_SKEW_LAMBDA
from .hidden_states import HIDDEN_STATE_LAYERS, HIDDEN_STATE_LOSSES
from .loss import TEMPERATURE_SCHEDULES
from .scalars import REPORT_TO_CHOICES

THESIS_STUDENT = "Salesforce/codet5-small"  # the thesis's default models (off the demo)
THESIS_TEACHER = "Salesforce/codet5-base"

# The --help groups, in their order.
DATA = "data (outer ZIP -> inner ZIP -> JSONL; the format: docs/DATA_FORMAT.md)"
MODELS = "models"
TRAINING = "training"
CHECKPOINTS = "checkpoints"
EVALUATION = "evaluation"
GROUPS = (DATA, MODELS, TRAINING, CHECKPOINTS, EVALUATION)


class SettingError(ValueError):
    """A setting's value outside its range or choices, or a settings file's key that names no setting."""


LMBDA_SCHEDULES = ("constant", "adaptive")  # --lmbda_schedule (distill/on_policy.StepPlan)
EVAL_STRATEGIES = ("epoch", "no")  # Hugging Face's names; the final evaluation always runs


def setting(default, group: str, help: str, *, aliases: tuple[str, ...] = (), resume_must_match: bool = False,
            minimum: float | None = None, maximum: float | None = None, above: float | None = None,
            below: float | None = None, choices: tuple[str, ...] | list[str] | None = None):
    """A RunConfig field: its default and what the parser, the checks, resumes and docs/USAGE.md read.

    The field's type gives the flag's kind: bool = a switch (store_true; default None = "not given"),
    int / float = parsed as such, str = as given. aliases are extra spellings (`--alpha`);
    resume_must_match: a checkpoint made with another value is refused; minimum / maximum (inclusive)
    and above / below (exclusive) bound a number; choices list the allowed strings.
    """
    metadata = {"group": group, "help": help, "aliases": tuple(aliases), "resume_must_match": resume_must_match,
                "minimum": minimum, "maximum": maximum, "above": above, "below": below,
                "choices": tuple(choices) if choices is not None else None}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class RunConfig:
    """script.py's flags, in its order; asdict(config) is the summary's and the checkpoints' `args`."""

    # data: outer ZIP -> inner ZIP -> JSONL (docs/DATA_FORMAT.md); None = picked from the published layout
    distillation_data_path: str | None = setting(
        None, DATA, "outer ZIP holding the inner ZIPs; without it the embedded demo runs (demo/: its archive and "
        "models, and demo/run_defaults.json's values for every flag not given)", resume_must_match=True)
    train_outer_zip_internal_path: str | None = setting(
        None, DATA, "path of the training inner ZIP inside the outer ZIP; when not given, the outer ZIP's only "
        "member named <name>/distillation_data_training.jsonl.zip", resume_must_match=True)
    train_inner_zip_jsonl_filename: str | None = setting(
        None, DATA, "JSONL member inside the training inner ZIP; when not given, its only *.jsonl(.gz) member",
        resume_must_match=True)
    train_jsonl_is_gzipped: bool | None = setting(
        None, DATA, "the training JSONL is gzip-compressed; when not given, detected from its first bytes")
    val_outer_zip_internal_path: str | None = setting(
        None, DATA, "path of the validation inner ZIP inside the outer ZIP; when not given, the outer ZIP's only "
        "member named <name>/distillation_data_validation.jsonl.zip")
    val_inner_zip_jsonl_filename: str | None = setting(
        None, DATA, "JSONL member inside the validation inner ZIP; when not given, its only *.jsonl(.gz) member")
    val_jsonl_is_gzipped: bool | None = setting(
        None, DATA, "the validation JSONL is gzip-compressed; when not given, detected from its first bytes")
    focal_content_field_name: str = setting(
        "focal_file", DATA, "record field holding the focal code (focal_method is tried when it is absent)")
    shuffle_buffer_size: int = setting(
        0, DATA, "records held in a shuffle buffer during training; 0 = file order, as the thesis",
        resume_must_match=True, minimum=0)
    retrieval_augment: int = setting(
        0, DATA, "K: the K retrieved (test method -> assertion) pairs of the most similar training tests (BM25, "
        "docs/RETRIEVAL.md) appended to every input, in training and evaluation, within the source length; "
        "0 = the thesis's input", resume_must_match=True, minimum=0)
    strict_data: bool = setting(
        False, DATA, "stop at the first bad record (naming file and line) instead of skipping and counting")
    allow_records_without_teacher: bool = setting(
        False, DATA, "this suite only, for plain fine-tuning at --alpha 0 on archives without teacher output "
        "(make_teacher_logits.py --package_only): keep records that lack teacher text or logits instead of skipping "
        "them as the thesis does; their teacher text counts as empty, so the vs-teacher metrics mean nothing then")
    max_record_bytes: int = setting(
        DEFAULT_MAX_RECORD_BYTES, DATA, "longest record line read (bytes; real records are at most ~131 MB); a longer "
        "line is skipped unread and counted as too_large (a ZIP bomb cannot fill the memory)", minimum=1)
    # models
    teacher_model_name: str = setting(
        THESIS_TEACHER, MODELS, "teacher Hugging Face id or local directory; with --teacher_source archive only its "
        "config is read (for its size), with online the model is loaded and run")
    student_model_name: str = setting(
        THESIS_STUDENT, MODELS, "student Hugging Face id or local directory (T5 family)", resume_must_match=True)
    tokenizer_name: str | None = setting(None, MODELS, "tokenizer id or directory; default: the student's")
    student_from_scratch: bool = setting(
        False, MODELS, "initialize the student randomly from its config instead of loading weights (automatic for a "
        "local directory that holds a config but no weights)")
    attention: str = setting(
        "auto", MODELS, "student attention: chunked (memory-efficient, recomputed in backward), eager, sdpa; auto = "
        "chunked for T5 students on CPU without --compile, else transformers' default", choices=ATTENTION_CHOICES)
    student_max_src_length: int = setting(1024, MODELS, "max source tokens", minimum=8)
    student_max_tgt_length: int = setting(
        512, MODELS, "max target tokens (also the generation max length)", minimum=2)
    # training
    output_dir: str = setting(
        "./distilled_model_output", TRAINING, "where models, metrics.jsonl and distillation_summary.json go")
    overwrite_output_dir: bool = setting(
        False, TRAINING, "allow writing into an output dir that already holds a finished run")
    epochs: int = setting(3, TRAINING, "training epochs", resume_must_match=True, minimum=1)
    batch_size: int = setting(8, TRAINING, "training batch size (records)", resume_must_match=True, minimum=1)
    eval_batch_size: int = setting(16, TRAINING, "evaluation batch size (records)", minimum=1)
    learning_rate: float = setting(5e-5, TRAINING, "AdamW peak learning rate", resume_must_match=True)
    weight_decay: float = setting(0.01, TRAINING, "AdamW weight decay")
    warmup_steps_ratio: float = setting(
        0.1, TRAINING, "share of optimizer steps spent in linear warmup (0-1)", minimum=0, maximum=1)
    alpha_kl_loss_weight: float = setting(
        0.7, TRAINING, "alpha: weight of the soft KL term; (1 - alpha) weighs the hard CE term (0-1)",
        aliases=("--alpha",), resume_must_match=True, minimum=0, maximum=1)
    temperature: float = setting(
        2.0, TRAINING, "softmax temperature T of the KL term (> 0)", aliases=("--temp",), resume_must_match=True,
        above=0)  # --temp: the abbreviation argparse took before --temperature_final made it ambiguous
    divergence: str = setting(
        DEFAULT_DIVERGENCE, TRAINING, "the soft term's divergence between teacher p and student q (docs/LOSSES.md); "
        "forward_kl = KL(p || q), the thesis", resume_must_match=True, choices=DIVERGENCE_CHOICES)
    jsd_beta: float = setting(
        DEFAULT_JSD_BETA, TRAINING, "jsd's beta: beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q",
        resume_must_match=True, above=0, below=1)
    skew_lambda: float = setting(
        DEFAULT_SKEW_LAMBDA, TRAINING, "skew_kl's and skew_reverse_kl's lambda: KL(p || lambda p + (1 - lambda) q), "
        "KL(q || lambda q + (1 - lambda) p)", resume_must_match=True, above=0, below=1)
    teacher_text_weight: float = setting(
        0.0, TRAINING, "w: adds w * CE on the teacher's predicted text (sequence-level KD; the student runs on the "
        "batch twice over when > 0)", resume_must_match=True, minimum=0)
    # the online teacher (docs/LOSSES.md, "The online teacher"); every one of these needs --teacher_source online
    teacher_source: str = setting(
        "archive", MODELS, "where the teacher's logits come from: archive = the records' compressed_logits (the "
        "thesis); online = --teacher_model_name run on each batch (frozen, eval mode; bf16/fp16 on a GPU with "
        "--precision), so records need no compressed_logits", resume_must_match=True, choices=("archive", "online"))
    lmbda: float = setting(
        0.0, TRAINING, "on-policy distillation (GKD's lmbda): the share of optimizer steps whose soft term is taken on "
        "the student's own sampled outputs, scored by the online teacher (the hard CE stays on the ground truth); "
        "0 = off", resume_must_match=True, minimum=0, maximum=1)
    student_sampling_temperature: float = setting(
        1.0, TRAINING, "temperature of the student's sampling on on-policy steps (1 = its own distribution); the "
        "samples are at most --student_max_tgt_length tokens", resume_must_match=True, above=0)
    replay_buffer_size: int = setting(
        0, TRAINING, "DistiLLM's adaptive off-policy replay: each process keeps its newest N sampled records; an "
        "on-policy step samples while the buffer fills, then with probability lmbda x (1 - training progress), and "
        "otherwise takes its soft term on records drawn from the buffer (no sampling: a cheaper step); 0 = off",
        resume_must_match=True, minimum=0)
    lmbda_schedule: str = setting(
        "constant", TRAINING, "constant = --lmbda throughout; adaptive = DistiLLM's: the on-policy share starts at "
        "--lmbda and rises by 0.1 (to at most 1) after each evaluation whose held-out CE is --adaptive_lmbda_eps "
        "or more above the last reference (the first evaluation sets it)", resume_must_match=True,
        choices=LMBDA_SCHEDULES)
    adaptive_lmbda_eps: float = setting(
        0.1, TRAINING, "--lmbda_schedule adaptive: the rise of the held-out CE that raises the on-policy share",
        resume_must_match=True, minimum=0)
    hidden_state_weight: float = setting(
        0.0, TRAINING, "adds this weight x the distance between the student's and the online teacher's last hidden "
        "states (through a learned linear projection when the widths differ; saved in checkpoints, not in the "
        "student); 0 = off", resume_must_match=True, minimum=0)
    hidden_state_loss: str = setting(
        "mse", TRAINING, "the hidden-state distance: mse = mean squared difference, cosine = 1 - cosine similarity, "
        "per position", resume_must_match=True, choices=HIDDEN_STATE_LOSSES)
    hidden_state_layers: str = setting(
        "both", TRAINING, "whose hidden states --hidden_state_weight compares: the encoder's last layer, the "
        "decoder's, or both (their mean)", resume_must_match=True, choices=HIDDEN_STATE_LAYERS)
    temperature_final: float | None = setting(
        None, TRAINING, "T at the last optimizer step; T moves from --temperature to it along --temperature_schedule "
        "(default: T stays --temperature)", resume_must_match=True, above=0)
    temperature_schedule: str = setting(
        "linear", TRAINING, "how T moves to --temperature_final over the optimizer steps", resume_must_match=True,
        choices=TEMPERATURE_SCHEDULES)
    gradient_accumulation_steps: int = setting(
        1, TRAINING, "batches accumulated per optimizer step", resume_must_match=True, minimum=1)
    max_grad_norm: float = setting(1.0, TRAINING, "gradient clipping norm")
    precision: str = setting(
        "fp32", TRAINING, "number format of training and evaluation: on GPU autocast; on CPU bf16 runs a bf16 copy of "
        "the weights (fp32 master weights and optimizer state) where the CPU has AVX512-BF16 or AMX, else fp32, "
        "as CPU fp16 does (docs/PERFORMANCE.md)", choices=("fp32", "bf16", "fp16"))
    gradient_checkpointing: bool = setting(
        False, TRAINING, "recompute each layer's activations in backward: less memory, about a third more compute "
        "(for students whose activations do not fit)")
    compile: bool = setting(
        False, TRAINING, "torch.compile the student for training (slow first steps; pays off on long GPU runs)")
    seed: int = setting(42, TRAINING, "random seed", resume_must_match=True)
    log_steps: int = setting(50, TRAINING, "optimizer steps between progress-bar updates")
    report_to: str = setting(
        "none", TRAINING, "tensorboard: the losses, learning rate and temperature of every optimizer step and each "
        "evaluation's metrics as TensorBoard scalars under --output_dir (tensorboard --logdir OUTPUT_DIR); "
        "none: metrics.jsonl and the summary only", choices=REPORT_TO_CHOICES)
    max_train_samples: int | None = setting(
        None, DATA, "use only the first N training records (quick runs and tests)", resume_must_match=True)
    max_eval_samples: int | None = setting(
        None, DATA, "use only the first N validation records (quick runs and tests)")
    num_dataloader_workers: int = setting(
        0, TRAINING, "DataLoader worker processes (records are sharded among them)", resume_must_match=True,
        minimum=0)
    # checkpoints
    save_steps: int = setting(
        0, CHECKPOINTS, "write a checkpoint (weights, optimizer, scheduler, RNG states, place in the data) every N "
        "optimizer steps and at every epoch end; 0 = no checkpoints", minimum=0)
    save_total_limit: int = setting(2, CHECKPOINTS, "keep only the newest N checkpoints (0 = keep all)", minimum=0)
    resume_from_checkpoint: str | None = setting(
        None, CHECKPOINTS, "continue a killed run from a checkpoint directory, or 'latest' in --output_dir")
    # evaluation
    num_beams: int = setting(4, EVALUATION, "beam width for generation", minimum=1)
    save_best_model: bool = setting(
        False, EVALUATION, "save the best epoch's student to output_dir/best_student_model")
    best_model_metric: str = setting(
        DEFAULT_BEST_MODEL_METRIC, EVALUATION, "metric that picks the best model (lower is better for avg_loss); "
        "the *_script1 choices are the thesis's numbers, *_s_vs_t_corrected compare with the teacher's lines "
        "joined, strict_exact_match needs an exact item match", choices=BEST_MODEL_METRICS)
    eval_strategy: str = setting(
        "epoch", EVALUATION, "epoch: evaluate after every epoch; no: only the final evaluation, after the last "
        "epoch (it always runs; the best model is then the final one)", choices=EVAL_STRATEGIES)

    def __post_init__(self):
        problems = [problem for spec in SETTINGS if (problem := spec.problem(getattr(self, spec.name)))]
        if problems:
            raise SettingError(problems[0])

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RunConfig:
        """The config of script.py's parsed arguments (every flag, nothing else)."""
        return cls(**vars(args))

    def as_flags(self) -> dict:
        """{flag name: value} in the flags' order, as vars() of the parsed arguments."""
        return dataclasses.asdict(self)

    def decoding(self) -> DecodingSettings:
        """How evaluation generates: --num_beams, and --student_max_tgt_length as the longest output."""
        return DecodingSettings(self.num_beams, self.student_max_tgt_length)

    def data_members(self) -> dict[str, SplitMembers]:
        """The training and validation members as given (None where script.py was not told)."""
        return {"training": SplitMembers(self.train_outer_zip_internal_path, self.train_inner_zip_jsonl_filename,
                                         self.train_jsonl_is_gzipped),
                "validation": SplitMembers(self.val_outer_zip_internal_path, self.val_inner_zip_jsonl_filename,
                                           self.val_jsonl_is_gzipped)}

    def with_data_members(self, members: dict[str, SplitMembers]) -> RunConfig:
        """A copy with the training and validation members replaced."""
        training, validation = members["training"], members["validation"]
        return dataclasses.replace(
            self, train_outer_zip_internal_path=training.inner_zip, train_inner_zip_jsonl_filename=training.jsonl,
            train_jsonl_is_gzipped=training.gzipped, val_outer_zip_internal_path=validation.inner_zip,
            val_inner_zip_jsonl_filename=validation.jsonl, val_jsonl_is_gzipped=validation.gzipped)


@dataclass(frozen=True)
class Setting:
    """One RunConfig field as the parser, the checks and the docs see it."""

    name: str
    kind: type  # bool (a switch), int, float or str
    default: object
    group: str
    help: str
    aliases: tuple[str, ...]
    resume_must_match: bool
    minimum: float | None
    maximum: float | None
    above: float | None
    below: float | None
    choices: tuple[str, ...] | None

    @property
    def flags(self) -> tuple[str, ...]:
        """The option strings: --name first, then the aliases."""
        return (f"--{self.name}", *self.aliases)

    def argparse_options(self) -> dict:
        """add_argument's keyword arguments."""
        options = {"dest": self.name, "default": self.default, "help": self.help}
        if self.kind is bool:
            options["action"] = "store_true"
        elif self.kind is not str:
            options["type"] = self.kind
        if self.choices is not None:
            options["choices"] = self.choices
        return options

    def problem(self, value) -> str | None:
        """What is wrong with value for this setting (one line), or None."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"--{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not low <= value <= high:
            return f"--{self.name} must be between {low:g} and {high:g}"
        if low is not None and high is None and not value >= low:
            return f"--{self.name} must be >= {low:g}"
        if high is not None and low is None and not value <= high:
            return f"--{self.name} must be <= {high:g}"
        if self.above is not None and not value > self.above:
            return f"--{self.name} must be > {self.above:g}"
        if self.below is not None and not value < self.below:
            return f"--{self.name} must be < {self.below:g}"
        return None


def _settings() -> tuple[Setting, ...]:
    """RunConfig's fields as Settings, in their order."""
    hints = typing.get_type_hints(RunConfig)
    found = []
    for field in dataclasses.fields(RunConfig):
        assert field.metadata, f"{field.name}: declare it with setting(default, group, help, ...)"
        assert field.metadata["help"] and field.metadata["group"] in GROUPS, f"{field.name}: help and a known group"
        kinds = [kind for kind in typing.get_args(hints[field.name]) or (hints[field.name],) if kind is not type(None)]
        assert len(kinds) == 1 and kinds[0] in (bool, int, float, str), f"{field.name}: unsupported type"
        assert kinds[0] is not bool or not field.default, f"{field.name}: a switch defaults to False or None"
        found.append(Setting(field.name, kinds[0], field.default, **field.metadata))
    return tuple(found)


SETTINGS = _settings()
RESUME_MUST_MATCH = tuple(spec.name for spec in SETTINGS if spec.resume_must_match)
DEFAULTS = {spec.name: spec.default for spec in SETTINGS}  # what a run made before a setting existed ran with


CONFIG_HELP = ("read settings from a YAML or JSON file: keys are the settings' names (learning_rate: 0.002); a "
               "flag given on the command line overrides the file; a key that names no setting is refused")


def build_parser(description: str, epilog: str) -> argparse.ArgumentParser:
    """script.py's parser: --config FILE, then one option per setting, in groups, defaults shown in --help."""
    parser = argparse.ArgumentParser(description=description, epilog=epilog,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", metavar="FILE", default=None, help=CONFIG_HELP)
    groups = {title: parser.add_argument_group(title) for title in GROUPS}
    for spec in SETTINGS:
        groups[spec.group].add_argument(*spec.flags, **spec.argparse_options())
        if spec.kind is bool:  # a switch a settings file turned on is turned off here
            groups[spec.group].add_argument(f"--no_{spec.name}", dest=spec.name, action="store_false",
                                            default=spec.default, help=f"turn --{spec.name} off (e.g. when --config "
                                            f"turns it on)")
    return parser


def parse_settings(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The settings, each from the first that gives it: the command line, --config FILE, the demo's (when no
    archive is given by either), the declared defaults. The namespace holds the settings only."""
    args = parser.parse_args(argv)
    from_file = read_settings_file(args.config) if args.config else {}
    if from_file:
        parser.set_defaults(**from_file)
        args = parser.parse_args(argv)
    if args.distillation_data_path is None:  # the embedded demo: its values for every setting not given
        parser.set_defaults(**{**demo_defaults(), **from_file})
        args = parser.parse_args(argv)
    del args.config
    return args


def read_settings_file(path: str) -> dict:
    """{setting name: value} of a YAML or JSON file (keys starting with _ are notes); unknown keys are refused."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as error:
        raise SettingError(f"--config {path}: {error.strerror or error}") from error
    try:
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise SettingError(f"--config {path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                           f"{' '.join(str(error).split())}") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise SettingError(f"--config {path}: expected setting names and their values, got a {type(values).__name__}")
    by_name = {spec.name: spec for spec in SETTINGS}
    unknown = [str(name) for name in values if name not in by_name and not str(name).startswith("_")]
    if unknown:
        raise SettingError(f"{path}: {'; '.join(_unknown_setting(name) for name in unknown)}")
    return {name: _file_value(by_name[name], value, path) for name, value in values.items() if name in by_name}


def _unknown_setting(name: str) -> str:
    """'NAME is not a setting of script.py' and the likeliest setting meant."""
    spellings = {flag.lstrip("-"): spec.name for spec in SETTINGS for flag in spec.flags}
    close = difflib.get_close_matches(name.lstrip("-"), list(spellings), n=1)
    return f"{name} is not a setting of script.py" + (f" (did you mean {spellings[close[0]]}?)" if close else "")


def _file_value(spec: Setting, value, path: str):
    """A settings file's value as the setting's kind (YAML reads 5e-5 as text); a wrong kind is refused by name."""
    if value is None and spec.default is None:
        return None
    if spec.kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    fits = {bool: lambda: isinstance(value, bool), str: lambda: isinstance(value, str),
            int: lambda: isinstance(value, int) and not isinstance(value, bool),
            float: lambda: isinstance(value, (int, float)) and not isinstance(value, bool)}[spec.kind]()
    if not fits:
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "text"}[spec.kind]
        raise SettingError(f"{path}: {spec.name} must be {kind}, got {value!r}")
    return float(value) if spec.kind is float else value


def demo_defaults() -> dict:
    """The embedded demo's archive, members and models, and the small-model values of demo/run_defaults.json."""
    if not os.path.isfile(DEMO.run_defaults):
        raise SettingError("give --distillation_data_path ARCHIVE: the embedded demo (demo/ of a checkout of the "
                           "repository) is not here")
    demo = {"distillation_data_path": DEMO.archive,
            "train_outer_zip_internal_path": DEMO.train_inner_zip, "train_inner_zip_jsonl_filename": DEMO.train_jsonl,
            "val_outer_zip_internal_path": DEMO.val_inner_zip, "val_inner_zip_jsonl_filename": DEMO.val_jsonl,
            "train_jsonl_is_gzipped": False, "val_jsonl_is_gzipped": False,
            "teacher_model_name": DEMO.teacher, "student_model_name": DEMO.student}  # found from any directory
    run_defaults = read_settings_file(DEMO.run_defaults)
    return {**demo, **{name: value for name, value in run_defaults.items() if name not in demo}}
