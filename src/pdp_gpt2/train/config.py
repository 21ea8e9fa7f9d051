"""TrainConfig: everything one `pdp-gpt2 train` run needs (field names are the CLI flags).
Validation lives in ``__post_init__``; the PDP part is a :class:`~pdp_gpt2.pdp.config.PDPConfig`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core import registry  # method names and capabilities; imports nothing heavy
from pdp_gpt2.pdp.config import PDPConfig


DISTILL_TEMPERATURE = 2.0  # --distill_temperature's default: DistilBERT's and movement pruning's T

# transformers' SchedulerType values that run without extra flags: reduce_lr_on_plateau needs an
# evaluation loop, cosine_with_min_lr / cosine_warmup_with_min_lr / warmup_stable_decay need
# lr_scheduler_kwargs, which `train` does not take.  (A test checks this list against transformers.)
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "greedy")
# Those that transformers added after our floor (pyproject): the first (major, minor) that has them.
LR_SCHEDULER_SINCE = {"greedy": (5, 4)}


def transformers_version() -> tuple[int, int]:
    """The installed transformers' (major, minor), read from its metadata (nothing is imported)."""
    from importlib.metadata import version

    return tuple(int(x) for x in version("transformers").split(".")[:2])


def _scheduler_available(name: str) -> bool:
    return name not in LR_SCHEDULER_SINCE or transformers_version() >= LR_SCHEDULER_SINCE[name]


def _scheduler_refusal(name: str) -> str:
    if name not in LR_SCHEDULER_SINCE:
        return ""
    dotted = lambda v: ".".join(map(str, v))  # noqa: E731
    return f"lr_scheduler {name} needs transformers >= {dotted(LR_SCHEDULER_SINCE[name])}; this is {dotted(transformers_version())}"


@dataclass
class TrainConfig:
    """Everything `pdp-gpt2 train` needs.  Field names are the CLI flags."""

    model: str = field(default="embedded", metadata={"help": "'embedded' (bundled small GPT-2), a local HF model directory, or a hub id such as gpt2"})
    dataset: str = field(default="shakespeare", metadata={"help": "'shakespeare' (bundled), a HF dataset 'name[:config]' such as wikitext:wikitext-2-raw-v1, or local .txt files/globs (comma-separated; files named train/valid/test are used as named, see data/splits.py)"})
    streaming: bool = field(default=False, metadata={"help": "read --dataset (HF or local .txt) as a stream of blocks, never whole in memory; needs --max_steps, and --warmup_epochs then counts fractions of --max_steps (a stream has no epochs)"})
    streaming_eval_tokens: int = field(default=1_000_000, metadata={"help": "with --streaming: evaluate on the first N tokens of the held-out split"})
    method: str = field(default="pdp", metadata={"help": "pruning method, a name in the method registry (pdp/core/registry.py; installed plugins too)"})  # the CLI appends the list (flags.help_of)
    output_dir: str | None = field(default=None, metadata={"help": "where the run is written (default: runs/<run_name>-<time>)"})
    run_name: str | None = field(default=None, metadata={"help": "name of the run (W&B and default output_dir)"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a different run already in --output_dir"})
    resume: str | None = field(default=None, metadata={"help": "resume from the latest checkpoint in --output_dir, or from this checkpoint directory"})
    # schedule
    # 0.5 epoch by default: the no-argument run on the embedded model (~690 steps) must stay
    # well under 10 minutes on 2 CPU cores, evaluations included.
    num_epochs: float = field(default=0.5, metadata={"help": "training epochs over the train split, fractions allowed (ignored if --max_steps >= 0)"})
    max_steps: int = field(default=-1, metadata={"help": "total optimizer steps; overrides --num_epochs when >= 0 (0: no training, the masks a one-shot method made at attach, evaluated and saved as they are)"})
    warmup_epochs: float = field(default=0.25, metadata={"help": "sparsity ramps from 0 to --sparsity over this many epochs; the rest of training recovers at the target"})
    warmup_steps: int | None = field(default=None, metadata={"help": "sparsity ramp length in optimizer steps, at most --max_steps (overrides --warmup_epochs)"})
    schedule: str = field(default="cubic", metadata={"help": "sparsity ramp shape: linear (original tool) or cubic (Zhu & Gupta)"})
    # optimization
    batch_size: int = field(default=8, metadata={"help": "sequences per device per micro-batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    lr_warmup_steps: int = field(default=20, metadata={"help": "linear learning-rate warm-up steps"})
    lr_scheduler: str = field(default="linear", metadata={"help": "HF learning-rate schedule after warm-up (linear, cosine, constant, ...)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm; 0 disables clipping"})
    custom_optimizer: bool = field(default=False, metadata={"help": "mask-aware AdamW: scale each masked weight's gradient by 0.1 + 0.9 m"})
    # distillation from the starting model (train/distill.py)
    distill: float = field(default=0.0, metadata={"help": "distil from the starting model (frozen, unpruned) with weight ALPHA in [0, 1]: loss = (1-ALPHA) LM + ALPHA T^2 KL(p_teacher || p_student), per token over the vocabulary at T (the Hinton / DistilBERT / movement-pruning direction, teacher as the reference distribution); 0: off. Costs a teacher forward per step (docs/performance.md)"})
    distill_temperature: float = field(default=DISTILL_TEMPERATURE, metadata={"help": "softmax temperature T of --distill (DistilBERT's and movement pruning's default)"})
    max_length: int = field(default=128, metadata={"help": "tokens per training block and evaluation window"})
    seed: int = field(default=42, metadata={"help": "random seed (data order, dropout, init of anything new)"})
    precision: str = field(default="fp32", metadata={"help": "fp32, bf16 or fp16 mixed precision (fp16 needs a CUDA GPU)"})
    # evaluation
    eval_split: str = field(default="test", metadata={"help": "held-out split for the reported perplexities: validation or test"})
    eval_stride: int | None = field(default=None, metadata={"help": "sliding-window stride (default: half of --max_length)"})
    eval_batch_size: int = field(default=16, metadata={"help": "windows per evaluation batch"})
    eval_tasks: str | None = field(default=None, metadata={"help": "after pruning, also run lm-evaluation-harness tasks on final/ (comma-separated names or task YAML paths, as `pdp-gpt2 eval --tasks`); scores go into summary.json and lm_eval.json; the names are checked before training starts; needs pip install -e '.[eval]'"})
    # logging / checkpoints
    log_interval: int = field(default=10, metadata={"help": "optimizer steps between metrics.jsonl lines"})
    save_steps: int = field(default=0, metadata={"help": "save a checkpoint-<step> every N steps (0: only at the end of interrupted runs)"})
    use_wandb: bool = field(default=False, metadata={"help": "log to Weights & Biases (offline if no API key)"})
    wandb_project: str = field(default="pdp-gpt2", metadata={"help": "W&B project"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    pdp: PDPConfig = field(default_factory=PDPConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.method in registry.names(),
             f"method must be one of {', '.join(registry.names())}, got {self.method!r}"),
            (self.num_epochs > 0, f"num_epochs must be > 0, got {self.num_epochs}"),
            (self.max_steps >= -1, f"max_steps must be >= 0 (or -1), got {self.max_steps}"),
            # 0 steps: a one-shot method's masks at attach, evaluated as they are; a gradual one never prunes
            (self.max_steps != 0 or self.method not in registry.names() or not registry.get(self.method).gradual,
             f"--max_steps 0 trains nothing, and {self.method} prunes along the schedule while training; use "
             "--max_steps > 0, or a one-shot method"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (self.warmup_steps is None or self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            # A ramp past the last step would leave the run short of its target (pdp/core/schedule.py).
            (self.warmup_steps is None or self.max_steps <= 0 or self.warmup_steps <= self.max_steps,
             f"--warmup_steps {self.warmup_steps} is longer than the run (--max_steps {self.max_steps}): the "
             f"sparsity would not reach its target; use at most {self.max_steps}"),
            (self.schedule in ("linear", "cubic"), f"schedule must be linear or cubic, got {self.schedule!r}"),
            (self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}"),
            (self.gradient_accumulation_steps > 0, f"gradient_accumulation_steps must be > 0, got {self.gradient_accumulation_steps}"),
            (0 < self.learning_rate < math.inf, f"learning_rate must be > 0 and finite, got {self.learning_rate}"),
            (0 <= self.seed < 2 ** 32, f"seed must be in 0..2**32-1 (numpy's range), got {self.seed}"),
            (self.lr_scheduler in LR_SCHEDULERS,
             f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {self.lr_scheduler!r}"),
            (_scheduler_available(self.lr_scheduler), _scheduler_refusal(self.lr_scheduler)),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.lr_warmup_steps >= 0, f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}"),
            (0 <= self.distill <= 1, f"distill must be in [0, 1] (0: off), got {self.distill}"),
            (0 < self.distill_temperature < math.inf, f"distill_temperature must be > 0 and finite, got {self.distill_temperature}"),
            (self.max_grad_norm >= 0, f"max_grad_norm must be >= 0 (0 disables clipping), got {self.max_grad_norm}"),
            (self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}"),
            (self.precision in ("fp32", "bf16", "fp16"), f"precision must be fp32, bf16 or fp16, got {self.precision!r}"),
            (self.eval_split in ("validation", "test"), f"eval_split must be validation or test, got {self.eval_split!r}"),
            (self.eval_stride is None or 0 < self.eval_stride <= self.max_length,
             f"eval_stride must be in 1..max_length ({self.max_length}), got {self.eval_stride}"),
            (self.eval_batch_size > 0, f"eval_batch_size must be > 0, got {self.eval_batch_size}"),
            (self.log_interval > 0, f"log_interval must be > 0, got {self.log_interval}"),
            (self.save_steps >= 0, f"save_steps must be >= 0, got {self.save_steps}"),
            (not self.streaming or self.max_steps >= 0, "--streaming needs --max_steps: a stream has no length to count epochs in"),
            (self.streaming_eval_tokens >= 2, f"streaming_eval_tokens must be >= 2, got {self.streaming_eval_tokens}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)
        spec = registry.get(self.method)
        if spec.prunes:
            spec.check_pattern(self.pdp.pattern)

    @property
    def stride(self) -> int:
        return self.eval_stride or max(1, self.max_length // 2)

    def to_dict(self) -> dict:
        return asdict(self)
