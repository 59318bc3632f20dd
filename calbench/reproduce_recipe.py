"""The recipe ``calbench reproduce`` runs: every arm's ``calbench train`` arguments, the seeds, the
evaluations, and the rule that picks how many RL steps ship (reference experiment v2).

Arms (each from its own seed's format warm-up; same data stream, steps, batch and learning rate):

* ``rlcr`` — GRPO on correctness − (q − c)² (+ format), split credit, exact credit for the
  confidence digit (λ = 10) with an entropy bonus τ = 0.02 on it (:data:`RLCR_ARGS`);
* ``rlvr`` — RLVR as in the RLCR paper: GRPO on correctness (+ the same format term) only, one
  sequence-level advantage for every token, the confidence's included (:data:`RLVR_ARGS`): no
  scoring rule, no exact digit credit, no entropy bonus;
* ``rlcr-ppo`` — the RLCR reward trained with PPO instead of GRPO (:data:`PPO_ARGS`; seed 0);
* ``rlvr-entropy`` — ablation, off unless ``--ablation``: RLVR with RLCR's confidence options
  (the v1 RLVR arm), whose only term on the confidence digit is the entropy bonus.

Seeds. A seed s replicates the whole pipeline: warm-up seed s, RL seed s, and evaluation with
``--seed s``. The trainer's seed picks its data as well as its sampling: the train stream of seed
s leaves out the test pool of seed s only, and the easiest difficulty bin has just 200 distinct
questions, so a seed-1 RL run would train on 62 of the 106 easiest questions of seed 0's test pool
(and a seed-0 warm-up holds 31 of the 90 of seed 1's). Each seed is therefore trained and tested
on its own disjoint pair.

Selection rule (:data:`SELECTION_RULE`, fixed before any v2 run was evaluated): see
:func:`choose_step`.
"""

from __future__ import annotations

from dataclasses import dataclass

from calbench.core.errors import UsageError
from calbench.core.models import REFERENCE_MODELS

BASE_MODEL = "smollm2-135m"
# LoRA r16 on the top 12 of 30 layers: 1.96M parameters, a 7.8 MB adapter (the cap is 10).
LORA_ARGS = ["--lora-r", "16", "--lora-alpha", "32", "--lora-last-layers", "12"]
# 640 worked examples, one epoch (40 steps). lr 1e-3: at 3e-4 the same 20 steps reached 22%
# held-out accuracy with 84% format, at 1e-3 34% with 100% (120 questions each, this machine).
WARMUP_ARGS = [
    *("--examples", "640", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3"),
    *("--eval-size", "120", "--eval-every", "20"),
    *LORA_ARGS,
]
# RL steps of the arm the selection reads; the chosen step k (<= RL_STEPS) is what every arm ships.
# 80, not the 120 first planned: measured on the 2-core machine of the v2 run, one 16 × 4 step
# took 50 s with two runs side by side (v1's machine: 27 s), so 120 steps were 100 min an arm and
# seeds 1-2 (four arms to k) could not fit a 3-hour session, whose run folders do not outlive it.
# Set before any v2 checkpoint was evaluated (the first legs had run 7 steps).
RL_STEPS = 80
SNAPSHOT_EVERY = 20
SNAPSHOT_STEPS = tuple(range(SNAPSHOT_EVERY, RL_STEPS + 1, SNAPSHOT_EVERY))
# Shared by every RL arm. 16 questions × 4 samples per step, four of each difficulty bin
# (stratified): against 4 × 8 at equal cost it kept accuracy higher (validation 0.380 vs 0.290)
# and ranked better (AUROC 0.879 vs 0.841), v1's probes. 48 new tokens: the worked steps + tags
# of the longest training chains are 43 tokens. lr 1e-3: at 2e-4 RLCR's confidence barely moved
# in 40 steps. --save-every 10: a killed run resumes from at most 10 steps back.
COMMON_RL_ARGS = [
    *("--prompts-per-step", "16", "--group-size", "4", "--max-new-tokens", "48", "--lr", "1e-3"),
    *("--train-order", "stratified", "--eval-size", "0", "--save-every", "10"),
    *LORA_ARGS,
]
# GRPO's KL(π‖π_ref) to the warm-up, the same for every GRPO arm.
GRPO_KL = ["--beta", "0.04"]
# The confidence options (docs/training.md): exact credit for the digit (--conf-grad expected;
# with the sampled estimator RLCR stated 0.5 for 479 of 500 held-out questions), its weight
# λ = 10 (at λ = 1 the digit had not reached even its question-independent optimum in 40 steps)
# and the entropy bonus τ = 0.02 (without it RLCR fell onto 0.2 for every question).
CONF_ARGS = ["--conf-grad", "expected", "--conf-entropy", "0.02", "--conf-weight", "10"]
RLCR_ARGS = ["--method", "rlcr", "--algo", "grpo", *GRPO_KL, *CONF_ARGS]
# The paper's RLVR: plain GRPO on correctness (+ format). --no-split-credit: with split credit
# the confidence tokens would get the advantage of a confidence term RLVR does not have (zero);
# here they get the sequence's, as every other token, and drift wherever that pushes them.
RLVR_ARGS = ["--method", "rlvr", "--algo", "grpo", *GRPO_KL, "--no-split-credit"]
# v1's RLVR: RLCR's options on a reward without a confidence term; τλ = 0.2 held its digit
# distribution uniform (2.296 of 2.303 nats), so its ECE was low by construction.
RLVR_ENTROPY_ARGS = ["--method", "rlvr", "--algo", "grpo", *GRPO_KL, *CONF_ARGS]
# PPO: value head + GAE instead of group-relative advantages; the confidence options above are
# GRPO's and do not exist here (split credit puts the Brier reward on the last token). One epoch
# of one minibatch: one optimizer step per batch of rollouts, as GRPO takes, so lr 1e-3 means the
# same step size (PPO's default 2 × 2 would take four). KL penalty in the reward at GRPO's 0.04.
PPO_ARGS = [
    *("--method", "rlcr", "--algo", "ppo", "--kl-coef", "0.04"),
    *("--ppo-epochs", "1", "--minibatches", "1"),
]


@dataclass(frozen=True)
class Arm:
    """One trained model: its folder under ``--out`` and ``calbench/reference/`` (``name``), the
    name it is published and evaluated as (``spec``), and its ``calbench train`` arguments."""

    name: str
    args: tuple[str, ...]
    seed: int
    what: str  # the model card's one-line description
    snapshots: bool = False  # trained to RL_STEPS with a copy every SNAPSHOT_EVERY steps
    headline: bool = False  # evaluated on every task (others: in-domain and shifted only)

    @property
    def spec(self) -> str:
        return f"{BASE_MODEL}-{self.name}"

    @property
    def warmup(self) -> str:
        return warmup_name(self.seed)

    def train_args(self, steps: int | str) -> list[str]:
        """Everything after ``--model`` / ``--out``: the arm's own flags and the shared ones."""
        return [*self.args, "--steps", str(steps), "--seed", str(self.seed), *COMMON_RL_ARGS]


def warmup_name(seed: int) -> str:
    """Run folder of seed ``seed``'s format warm-up (seed 0's ships as smollm2-135m-warmup)."""
    return "warmup" if seed == 0 else f"warmup-seed{seed}"


def _suffix(seed: int) -> str:
    return "" if seed == 0 else f"-seed{seed}"


WHAT = {
    "rlvr": "the warm-up, then GRPO on correctness only (RLVR as in the RLCR paper)",
    "rlcr": "the warm-up, then GRPO on correctness + Brier (RLCR, Damani et al. 2025)",
    "rlcr-ppo": "the warm-up, then PPO on correctness + Brier (the RLCR reward)",
    "rlvr-entropy": "ablation: the warm-up, then GRPO on correctness with RLCR's confidence-digit "
    "options (entropy bonus, exact credit), which hold RLVR's unrewarded confidence flat",
}


def arms(seeds: list[int], ablation: bool = False) -> list[Arm]:
    """The RL arms for ``seeds``: RLVR and RLCR per seed, PPO and (``ablation``) the
    entropy-regularised RLVR on seed 0. RLCR seed 0 (the one the selection reads), RLVR seed 0
    and PPO train in snapshots (to RL_STEPS, shipping the copy at the chosen step: PPO, the
    slowest, would otherwise start only after the choice and be the run's long pole); the rest
    train straight to the chosen step."""
    out: list[Arm] = []
    for s in seeds:
        for m, args in (("rlvr", RLVR_ARGS), ("rlcr", RLCR_ARGS)):
            out.append(Arm(m + _suffix(s), tuple(args), s, WHAT[m], s == 0, s == 0))
        if s == 0:  # PPO trains in snapshots beside RLVR and RLCR: no wait for the choice
            out.append(Arm("rlcr-ppo", tuple(PPO_ARGS), 0, WHAT["rlcr-ppo"], snapshots=True))
            if ablation:
                args = tuple(RLVR_ENTROPY_ARGS)
                out.append(Arm("rlvr-entropy", args, 0, WHAT["rlvr-entropy"]))
    unknown = [a.spec for a in out if REFERENCE_MODELS.get(a.spec) != a.name]
    if unknown:  # the registry resolves --model NAME; a name it lacks could not be evaluated
        raise UsageError(
            f"{', '.join(unknown)}: not in calbench.core.models.REFERENCE_MODELS; "
            f"seeds with a registered name: {', '.join(map(str, registered_seeds()))}"
        )
    return out


def registered_seeds() -> list[int]:
    seeds = {0}
    for spec in REFERENCE_MODELS:
        if spec.startswith(f"{BASE_MODEL}-rlcr-seed"):
            seeds.add(int(spec.rsplit("seed", 1)[1]))
    return sorted(seeds)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; a UsageError for anything else, or a seed without names."""
    try:
        seeds = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UsageError(
            f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2"
        ) from None
    known = registered_seeds()
    if not seeds or any(s not in known for s in seeds):
        raise UsageError(f"--seeds {text!r}: choose from {', '.join(map(str, known))}")
    return seeds


# (task, extra eval args, every model or only the headline ones). Headline: the untrained base,
# the warm-up and seed 0's RLVR and RLCR; the other arms are evaluated in domain and shifted.
# In this order: the queue runs them so (the in-domain test first, the slowest last).
EVALS: list[tuple[str, list[str], bool]] = [
    ("chain_sum", ["--max-new-tokens", "64"], True),  # all 500 held-out questions
    # shifted, where the warm-up is right 10–90% of the time (docs/reference-models.md): the
    # first 200 questions (the minimum; the warm-up's 12-15% on the first two leaves
    # 23-29 right answers). 500 each would take 8.6 min a model here, 200 take 3.5.
    ("chain_sum_4terms", ["--limit", "200", "--max-new-tokens", "64"], True),
    ("chain_sum_3digits", ["--limit", "200", "--max-new-tokens", "64"], True),
    ("chain_sum_spelled", ["--limit", "200", "--max-new-tokens", "64"], True),  # = chain_sum's i
    ("gsm8k", ["--limit", "300", "--max-new-tokens", "48"], False),  # needs --data-dir
    ("gsm_symbolic", ["--limit", "100", "--max-new-tokens", "48"], False),
    ("truthfulqa_mc", ["--max-new-tokens", "32"], False),  # all 817; needs --data-dir
]
NEEDS_DATA_DIR = ("truthfulqa_mc", "gsm8k")
PLOTTED = ("warmup", "rlvr", "rlcr")  # the side-by-side reliability diagrams, per task

# ----------------------------------------------------------------------------------- selection
SELECT_TASK, SELECT_N, SELECT_ARM = "chain_sum_val", 200, "rlcr"
MIN_PARSE, ACC_SLACK, MIN_AUROC = 0.95, 0.03, 0.80
SELECTION_RULE = (
    f"RLCR (seed 0) trains {RL_STEPS} steps and keeps its adapter every {SNAPSHOT_EVERY} steps. "
    f"Each is evaluated greedily on the first {SELECT_N} questions of {SELECT_TASK} (tags, 64 "
    f"new tokens). Candidates: the checkpoints whose confidence parse rate is >= "
    f"{MIN_PARSE:.0%} (all of them if none is) and whose accuracy is within "
    f"{ACC_SLACK * 100:.0f} points of the best candidate's. Among the candidates with AUROC >= "
    f"{MIN_AUROC:.2f}, the lowest ECE (10 equal-width bins) wins; if none reaches that AUROC, "
    "the highest AUROC wins. Metrics are compared rounded to 3 decimals; a tie goes to fewer "
    "steps. Every arm and seed ships at the chosen step."
)


def choose_step(table: list[dict]) -> tuple[int, str]:
    """Apply :data:`SELECTION_RULE` to rows ``{"step", "accuracy", "ece", "auroc",
    "parse_rate"}`` (``auroc`` / ``ece`` may be None: undefined when every answer is right, or
    wrong, or no confidence parsed); return the chosen step and why."""
    if not table:
        raise ValueError("no checkpoints to choose from")

    def r(x: float | None) -> float | None:
        return None if x is None else round(float(x), 3)

    rows = sorted(table, key=lambda t: t["step"])
    parsed = [t for t in rows if (r(t.get("parse_rate")) or 0.0) >= MIN_PARSE]
    pool = parsed or rows
    best = max(r(t["accuracy"]) for t in pool)
    cands = [t for t in pool if r(t["accuracy"]) >= round(best - ACC_SLACK, 3)]
    ranked = [t for t in cands if r(t.get("auroc")) is not None and r(t["auroc"]) >= MIN_AUROC]
    ranked = [t for t in ranked if r(t.get("ece")) is not None]
    if ranked:  # min() keeps the first of equal keys: rows are in step order, so fewer steps
        pick = min(ranked, key=lambda t: r(t["ece"]))
        why = f"lowest ECE {r(pick['ece']):.3f} among {len(ranked)} with AUROC >= {MIN_AUROC}"
    else:
        scored = [t for t in cands if r(t.get("auroc")) is not None]
        if not scored:
            raise ValueError("no checkpoint has an AUROC: the rule cannot choose")
        pick = max(scored, key=lambda t: (r(t["auroc"]), -t["step"]))
        why = f"no AUROC >= {MIN_AUROC}; highest AUROC {r(pick['auroc']):.3f}"
    slack = f"{ACC_SLACK * 100:.0f} points of {best:.3f}"
    why += f" (accuracy within {slack}: {len(cands)} of {len(rows)} checkpoints)"
    return int(pick["step"]), why
