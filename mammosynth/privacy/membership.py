"""Membership inference on the diffusion model (DESIGN §9).

Two attacks score how "familiar" the model is with an image; members (training images)
should not score higher than non-members (unseen test images) if the model does not
memorise:

* **loss attack** (:func:`loss_scores`): the denoising error ``‖ε̂(x_t, t, c) − ε‖²`` of the
  image's latent, averaged over several timesteps ``t`` and seeded noise draws; score = minus
  the error (Carlini et al. 2023; Matsumoto et al. 2023).
* **SecMI-style attack** (:func:`secmi_scores`): deterministic DDIM inversion of the latent to
  ``x_t``, one more inversion step to ``x_{t+Δ}``, one deterministic denoising step back to
  ``x̂_t``; score = minus ``‖x̂_t − x_t‖²`` (the "t-error" of Duan et al. 2023).

Both run through the pipeline's own methods (``encode_images``, ``prepare_conditions``,
``denoiser``, ``scheduler``), conditioned on each image's own labels (the attacker knows
them). :func:`attack_metrics` gives ROC-AUC, TPR at 1 % and 0.1 % FPR with bootstrap CIs;
:func:`run_membership` adds a member-free control (two disjoint non-member halves), whose
AUC should be near 0.5: it shows what "no signal" looks like at the same sample size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..models.denoiser import EncodedConditions

__all__ = [
    "AttackConfig",
    "loss_scores",
    "secmi_scores",
    "attack_metrics",
    "two_sample_auc",
    "run_membership",
    "plot_roc",
]


@dataclass
class AttackConfig:
    """Settings of both attacks.

    Attributes:
        timesteps: timesteps of the loss attack.
        noise_draws: noise draws per timestep (loss attack).
        secmi_t: timestep the SecMI inversion goes to.
        secmi_interval: DDIM step Δ of the inversion.
        batch_size: images per model call.
        seed: noise seed (the same noise for members and non-members: a paired design).
    """

    timesteps: tuple[int, ...] = (50, 100, 200, 300, 500)
    noise_draws: int = 2
    secmi_t: int = 100
    secmi_interval: int = 20
    batch_size: int = 16
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _alpha_bar(scheduler: Any, t: int, device: torch.device) -> torch.Tensor:
    return scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)[int(t)]


def _to_epsilon(scheduler: Any, output: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The model output as a noise prediction, whatever ``prediction_type`` it was trained with."""
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind == "epsilon":
        return output
    if kind == "v_prediction":
        return alpha_bar.sqrt() * output + (1 - alpha_bar).sqrt() * sample
    if kind == "sample":
        return (sample - alpha_bar.sqrt() * output) / (1 - alpha_bar).sqrt()
    raise ValueError(f"scheduler prediction_type {kind!r} is not supported (epsilon, v_prediction, sample)")


def _conditions(pipe: Any, rows: Any, height: int, width: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    from ..data.prepared import row_conditions

    conditions = [row_conditions(row, height, width) for _, row in rows.iterrows()]
    return pipe.prepare_conditions(conditions, height, width)


def _batches(frames: np.ndarray, codes: Mapping[str, torch.Tensor], masks: torch.Tensor, batch_size: int):
    for start in range(0, len(frames), batch_size):
        stop = start + batch_size
        yield (start, np.asarray(frames[start:stop]), {k: v[start:stop] for k, v in codes.items()},
               masks[start:stop])


def _check(frames: np.ndarray, rows: Any) -> None:
    if frames.ndim != 3 or frames.dtype != np.uint16:
        raise ValueError(f"frames have to be uint16 (N, H, W), got {frames.dtype} {frames.shape}")
    if len(frames) != len(rows):
        raise ValueError(f"got {len(frames)} frames but {len(rows)} manifest rows")
    if len(frames) == 0:
        raise ValueError("membership inference needs at least one image per group")


@torch.no_grad()
def loss_scores(pipe: Any, frames: np.ndarray, rows: Any, config: AttackConfig = AttackConfig()) -> np.ndarray:
    """Loss-attack scores (higher = more member-like) of uint16 frames with their manifest rows."""
    _check(frames, rows)
    height, width = frames.shape[1:]
    codes, masks = _conditions(pipe, rows, height, width)
    scheduler = pipe.scheduler
    limit = int(scheduler.config.num_train_timesteps)
    bad = [t for t in config.timesteps if not 0 <= int(t) < limit]
    if bad:
        raise ValueError(f"attack timesteps {bad} are outside the scheduler's 0..{limit - 1}")
    scores = np.zeros(len(frames))
    for start, batch, batch_codes, batch_masks in _batches(frames, codes, masks, config.batch_size):
        latents = pipe.encode_images(batch)
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        errors = torch.zeros(len(batch), device=latents.device)
        for t in config.timesteps:
            # from the training schedule itself: a scheduler's add_noise can depend on the inference
            # steps it was last set to (DPM-Solver's looks t up among them), i.e. on what ran before
            alpha_bar = _alpha_bar(scheduler, t, latents.device)
            for _ in range(config.noise_draws):
                noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
                timesteps = torch.full((len(batch),), int(t), dtype=torch.long, device=latents.device)
                noisy = alpha_bar.to(latents.dtype).sqrt() * latents + (1 - alpha_bar.to(latents.dtype)).sqrt() * noise
                output = pipe.denoiser(noisy, timesteps, EncodedConditions(batch_codes, batch_masks))
                eps = _to_epsilon(scheduler, output.float(), noisy.float(), alpha_bar)
                errors += ((eps - noise.float()) ** 2).flatten(1).mean(1)
        scores[start : start + len(batch)] = (-errors / (len(config.timesteps) * config.noise_draws)).cpu().numpy()
    return scores


def _ddim_move(pipe: Any, x: torch.Tensor, t_from: int, t_to: int, codes: Mapping[str, torch.Tensor],
               masks: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step (η = 0) from ``t_from`` to ``t_to`` (either direction)."""
    scheduler = pipe.scheduler
    a_from = _alpha_bar(scheduler, t_from, x.device)
    a_to = _alpha_bar(scheduler, t_to, x.device)
    timesteps = torch.full((len(x),), int(t_from), dtype=torch.long, device=x.device)
    eps = _to_epsilon(scheduler, pipe.denoiser(x, timesteps, EncodedConditions(codes, masks)).float(), x.float(), a_from)
    x0 = (x.float() - (1 - a_from).sqrt() * eps) / a_from.sqrt()
    return (a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps).to(x.dtype)


@torch.no_grad()
def secmi_scores(pipe: Any, frames: np.ndarray, rows: Any, config: AttackConfig = AttackConfig()) -> np.ndarray:
    """SecMI-style t-error scores (higher = more member-like) of uint16 frames."""
    _check(frames, rows)
    height, width = frames.shape[1:]
    codes, masks = _conditions(pipe, rows, height, width)
    limit = int(pipe.scheduler.config.num_train_timesteps)
    t, step = int(config.secmi_t), int(config.secmi_interval)
    if step <= 0 or t <= 0 or t % step or t + step >= limit:
        raise ValueError(
            f"secmi_t ({t}) has to be a positive multiple of secmi_interval ({step}) with "
            f"secmi_t + secmi_interval below the scheduler's {limit} timesteps"
        )
    scores = np.zeros(len(frames))
    for start, batch, batch_codes, batch_masks in _batches(frames, codes, masks, config.batch_size):
        x = pipe.encode_images(batch)
        # 1. deterministic inversion x_0 → x_t
        for s in range(0, t, step):
            x = _ddim_move(pipe, x, s, s + step, batch_codes, batch_masks)
        # 2. one more inversion step x_t → x_{t+Δ}, and one denoising step back to x̂_t
        x_next = _ddim_move(pipe, x, t, t + step, batch_codes, batch_masks)
        x_back = _ddim_move(pipe, x_next, t + step, t, batch_codes, batch_masks)
        error = ((x_back.float() - x.float()) ** 2).flatten(1).mean(1)
        scores[start : start + len(batch)] = (-error).cpu().numpy()
    return scores


def two_sample_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC-AUC of ``positive`` against ``negative`` scores: P(positive > negative), ties half.

    0.5 = the scores do not separate the two groups; ``nan`` when either group is empty.
    """
    from sklearn.metrics import roc_auc_score

    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(y, np.r_[positive, negative]))


def _tpr_at(member: np.ndarray, nonmember: np.ndarray, fpr: float) -> float:
    """Highest TPR of a threshold rule ``score > t`` whose FPR is at most ``fpr``."""
    allowed = int(np.floor(fpr * len(nonmember) + 1e-9))
    if allowed >= len(nonmember):
        return 1.0
    threshold = np.sort(nonmember)[::-1][allowed]
    return float((member > threshold).mean())


def _summary(member: np.ndarray, nonmember: np.ndarray) -> tuple[float, float, float]:
    return two_sample_auc(member, nonmember), _tpr_at(member, nonmember, 0.01), _tpr_at(member, nonmember, 0.001)


def _bootstrap_ci(member: np.ndarray, nonmember: np.ndarray, n_bootstrap: int,
                  seed: int) -> tuple[list[float], list[float]]:
    """Percentile-bootstrap 95 % intervals of :func:`_summary`, members and non-members resampled apart.

    ``nan`` without resamples or when a group has fewer than two scores.
    """
    from scipy.stats import bootstrap

    if n_bootstrap < 1 or min(len(member), len(nonmember)) < 2:
        return [float("nan")] * 3, [float("nan")] * 3
    result = bootstrap((member, nonmember), _summary, n_resamples=int(n_bootstrap), vectorized=False,
                       confidence_level=0.95, method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return [float(v) for v in low], [float(v) for v in high]


def attack_metrics(member_scores: Sequence[float], nonmember_scores: Sequence[float], n_bootstrap: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """ROC-AUC, TPR@1%FPR and TPR@0.1%FPR of an attack, each with a bootstrap 95 % CI.

    Args:
        member_scores: attack scores of members (higher = "member").
        nonmember_scores: scores of non-members.
        n_bootstrap: resamples (members and non-members resampled separately).
        seed: bootstrap seed.

    Returns:
        ``{"auc": {"value", "ci95"}, "tpr_at_1pct_fpr": ..., "tpr_at_0.1pct_fpr": ..., "n_members",
        "n_nonmembers", "roc": {"fpr", "tpr"}}``. An AUC of 0.5 means no membership signal;
        TPR@0.1%FPR is only resolved with ≥ 1000 non-members (``resolved`` says so).
    """
    from sklearn.metrics import roc_curve

    member = np.asarray(member_scores, dtype=np.float64)
    nonmember = np.asarray(nonmember_scores, dtype=np.float64)
    if len(member) == 0 or len(nonmember) == 0:
        raise ValueError("attack metrics need at least one member and one non-member score")
    values = _summary(member, nonmember)
    names = ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")
    lows, highs = _bootstrap_ci(member, nonmember, n_bootstrap, seed)
    out: dict[str, Any] = {name: {"value": values[k], "ci95": [lows[k], highs[k]]} for k, name in enumerate(names)}
    # An attacker can learn the direction of a score on a shadow model: max(AUC, 1 − AUC) is
    # the separability whatever the sign (SecMI's t-error can be *larger* for members of a
    # heavily over-fitted model).
    out["separability"] = max(values[0], 1.0 - values[0])
    out["tpr_at_1pct_fpr"]["resolved"] = len(nonmember) >= 100
    out["tpr_at_0.1pct_fpr"]["resolved"] = len(nonmember) >= 1000
    fpr, tpr, _ = roc_curve(np.r_[np.ones(len(member)), np.zeros(len(nonmember))], np.r_[member, nonmember])
    out["roc"] = {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()}
    out["n_members"], out["n_nonmembers"] = int(len(member)), int(len(nonmember))
    return out


def _sample_rows(rows: Any, n: int | None, seed: int) -> Any:
    if n is None or n >= len(rows):
        return rows
    return rows.sample(n=n, random_state=seed).sort_values("index")


def _halves_by_study(rows: Any, seed: int) -> tuple[Any, Any]:
    studies = np.array(sorted(rows["study_id"].unique()))
    rng = np.random.default_rng(seed)
    first = set(rng.permutation(studies)[: len(studies) // 2])
    in_first = rows["study_id"].isin(first)
    return rows[in_first], rows[~in_first]


def run_membership(pipe: Any, data: Any, n_members: int | None = 200, n_nonmembers: int | None = 200,
                   config: AttackConfig = AttackConfig(), attacks: Sequence[str] = ("loss", "secmi"),
                   n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Both attacks on a prepared dataset: members = training split, non-members = test split.

    The member-free control compares two disjoint halves (by study) of the non-members:
    neither half was trained on, so its AUC estimates the no-signal level (≈ 0.5).

    Args:
        pipe: a ``MammoLDMPipeline`` (or anything with its ``encode_images``,
            ``prepare_conditions``, ``denoiser`` and ``scheduler``).
        data: a :class:`~mammosynth.data.prepared.PreparedData` with training and test splits.
        n_members, n_nonmembers: images sampled from each split (``None`` = all).
        config: attack settings.
        attacks: which attacks to run (``"loss"``, ``"secmi"``).
        n_bootstrap: bootstrap resamples for the CIs.
        seed: sampling and bootstrap seed.
    """
    unknown = set(attacks) - {"loss", "secmi"}
    if unknown:
        raise ValueError(f"unknown attack(s) {sorted(unknown)}; choose from 'loss', 'secmi'")
    members = _sample_rows(data.split("training"), n_members, seed)
    nonmembers = _sample_rows(data.split("test"), n_nonmembers, seed + 1)
    half_a, half_b = _halves_by_study(nonmembers, seed + 2)
    if len(half_a) == 0 or len(half_b) == 0:
        raise ValueError("the member-free control needs non-members from at least two test studies")
    score_fns = {"loss": loss_scores, "secmi": secmi_scores}
    result: dict[str, Any] = {"config": config.to_dict(), "attacks": {}}
    for name in attacks:
        fn = score_fns[name]
        m = fn(pipe, data.frames(members["index"].to_numpy()), members, config)
        nm_scores = fn(pipe, data.frames(nonmembers["index"].to_numpy()), nonmembers, config)
        position = {idx: k for k, idx in enumerate(nonmembers["index"].to_numpy())}
        a = nm_scores[[position[i] for i in half_a["index"].to_numpy()]]
        b = nm_scores[[position[i] for i in half_b["index"].to_numpy()]]
        result["attacks"][name] = {
            "members_vs_nonmembers": attack_metrics(m, nm_scores, n_bootstrap, seed),
            "control_nonmember_halves": attack_metrics(a, b, n_bootstrap, seed),
            "score_means": {"members": float(m.mean()), "nonmembers": float(nm_scores.mean())},
        }
    return result


def plot_roc(result: Mapping[str, Any], path: Any) -> None:
    """ROC curves of every attack and its control (log-scaled FPR inset-free, one PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = result["attacks"]
    fig, axes = plt.subplots(1, max(len(attacks), 1), figsize=(5 * max(len(attacks), 1), 4.5), squeeze=False)
    for ax, (name, res) in zip(axes[0], attacks.items()):
        for key, style, label in (("members_vs_nonmembers", "-", "members vs non-members"),
                                  ("control_nonmember_halves", "--", "control (non-member halves)")):
            roc = res[key]["roc"]
            auc = res[key]["auc"]
            ax.plot(roc["fpr"], roc["tpr"], style,
                    label=f"{label}: AUC {auc['value']:.3f} [{auc['ci95'][0]:.3f}, {auc['ci95'][1]:.3f}]")
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
        ax.set(title=f"{name} attack", xlabel="false positive rate", ylabel="true positive rate")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
