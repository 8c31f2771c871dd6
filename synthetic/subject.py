"""Subject model: clinical variables, tubers and the outcome label, with the exact posterior.

Generative model (naive-Bayes shaped: every observable is drawn given the label
``y`` (1 = uncontrolled at one year, the positive class), and onset also given
the age at imaging):

* ``y ~ Bernoulli(203/300)`` (the WAE-Net cohort prevalence).
* ``male | y ~ Bernoulli(0.527 if y else 0.577)``.
* ``age_at_onset_months | y``: log-normal with the cohort mean/SD of the group
  (30.4/33.2 controlled, 17.4/26.2 uncontrolled), truncated to (0, 191.5] and
  rounded to 0.1 month.
* ``age_at_imaging = onset + delay``, ``delay | y, onset``: log-normal with mean
  = difference of the group means of imaging and onset age (26.6 controlled,
  18.9 uncontrolled) and SD = sqrt(SD_imaging^2 - SD_onset^2) (30.7 in both
  groups), truncated so that imaging is in [6, 192] months and at least 0.5
  month after onset; then rounded to whole days (months = days / 30.4375).
* ``infantile_spasms | y ~ Bernoulli(0.458 if y else 0.216)``.
* ``asm_count_ge_3 | y ~ Bernoulli(0.842 if y else 0.433)``.
* Tubers: count ``N | y ~ Poisson(lam_y)``; each tuber independently has a lobe
  ``~ Categorical(p_lobe_y)`` (frontal, parietal, temporal, occipital), a unit
  radius ``log r ~ Normal(mu_y, sigma_r)`` in mm for an adult-size brain (the
  rendered radius is ``r * head_scale``; head scale is observable from the image
  and does not depend on ``y`` given age), and label-independent nuisances
  (hemisphere, position inside the lobe, depth, elongation, contrast).
* Subependymal nodules: count ``~ Poisson(4)`` and sizes independent of ``y``.

Because every density is known, :func:`posterior_uncontrolled` computes the
exact ``P(y = 1 | all observables)`` (discretisation of ages handled with CDF
differences), and :func:`best_achievable_auc` the AUC of that posterior, i.e.
the best AUC any classifier can reach on this synthetic population. Clinical
values appear in the cohort table of ``REFERENCE.md``; the imaging parameters
are ours, chosen so that the combined best AUC is about 0.9.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import special, stats

DAYS_PER_MONTH = 30.4375
LOBES = ("frontal", "parietal", "temporal", "occipital")
AGE_MIN_MONTHS = 6.0
AGE_MAX_MONTHS = 192.0
MIN_DELAY_MONTHS = 0.5
ONSET_MAX_MONTHS = AGE_MAX_MONTHS - MIN_DELAY_MONTHS


@dataclass(frozen=True)
class LabelModel:
    """Parameters of the generative label model (index 0 = controlled, 1 = uncontrolled)."""

    prevalence: float = 203 / 300
    p_male: tuple[float, float] = (0.577, 0.527)
    age_imaging_mean_sd: tuple[tuple[float, float], tuple[float, float]] = ((57.01, 45.18), (36.27, 40.37))
    age_onset_mean_sd: tuple[tuple[float, float], tuple[float, float]] = ((30.44, 33.17), (17.35, 26.22))
    p_spasms: tuple[float, float] = (0.216, 0.458)
    p_asm_ge_3: tuple[float, float] = (0.433, 0.842)
    tuber_rate: tuple[float, float] = (6.0, 8.0)
    tuber_log_radius_mu: tuple[float, float] = (math.log(4.3), math.log(4.7))
    tuber_log_radius_sigma: float = 0.35
    lobe_probs: tuple[tuple[float, ...], tuple[float, ...]] = (
        (0.38, 0.25, 0.17, 0.20),
        (0.36, 0.22, 0.26, 0.16),
    )
    sen_rate: float = 4.0

    def delay_mean_sd(self, y: int) -> tuple[float, float]:
        """Onset-to-imaging delay: mean = difference of the group means, SD so that the variances add up."""
        (mi, si), (mo, so) = self.age_imaging_mean_sd[y], self.age_onset_mean_sd[y]
        return (mi - mo, math.sqrt(max(si * si - so * so, 1.0)))


DEFAULT_MODEL = LabelModel()


@dataclass(frozen=True)
class Tuber:
    """One cortical/subcortical tuber, in the head (anatomy) frame.

    Attributes:
        lobe: One of :data:`LOBES`.
        hemisphere: ``"left"`` or ``"right"``.
        azimuth_deg / elevation_deg: Direction from the brain centre (0 deg azimuth
            points anterior, 90 deg lateral; elevation positive superior).
        depth: Position of the centre as a fraction of the brain radius along that
            direction (about 0.72-0.9: subcortical to cortical).
        unit_radius_mm: Radius for an adult-size brain; drives the label model.
        elongation: Radial/tangential semi-axis ratio (tubers are wedge-like).
        contrast: Relative brightness (1 = typical).
    """

    lobe: str
    hemisphere: str
    azimuth_deg: float
    elevation_deg: float
    depth: float
    unit_radius_mm: float
    elongation: float
    contrast: float


@dataclass(frozen=True)
class Nodule:
    """One subependymal nodule on the wall of a lateral ventricle."""

    hemisphere: str
    position: float  # 0 = frontal horn .. 1 = atrium, along the ventricle
    radius_mm: float


@dataclass(frozen=True)
class SubjectParams:
    """Everything drawn for one synthetic subject.

    Attributes:
        label: 1 = uncontrolled at one year (positive class), 0 = controlled.
        male: Sex.
        age_at_imaging_days: Age at the MRI in whole days (the DICOM birth date is
            study date minus this).
        age_at_onset_months: Age at seizure onset, 0.1-month resolution.
        infantile_spasms / asm_count_ge_3: Clinical flags.
        head_scale: Linear size of the head relative to an adult (observable).
        tubers / nodules: Lesions.
    """

    label: int
    male: bool
    age_at_imaging_days: int
    age_at_onset_months: float
    infantile_spasms: bool
    asm_count_ge_3: bool
    head_scale: float
    tubers: tuple[Tuber, ...] = ()
    nodules: tuple[Nodule, ...] = ()
    anatomy_seed: int = 0

    @property
    def age_at_imaging_months(self) -> float:
        return self.age_at_imaging_days / DAYS_PER_MONTH

    def tuber_radii_mm(self) -> np.ndarray:
        return np.array([t.unit_radius_mm * self.head_scale for t in self.tubers])

    def tuber_volume_ml(self) -> float:
        r = self.tuber_radii_mm()
        e = np.array([t.elongation for t in self.tubers])
        return float(np.sum(4.0 / 3.0 * math.pi * r**3 * e) / 1000.0)

    def burden(self) -> dict[str, Any]:
        """Summary of tuber burden (count, volume, per lobe) for truth files."""
        per_lobe = {lobe: sum(1 for t in self.tubers if t.lobe == lobe) for lobe in LOBES}
        return {
            "tuber_count": len(self.tubers),
            "tuber_volume_ml": round(self.tuber_volume_ml(), 3),
            "tubers_per_lobe": per_lobe,
            "nodule_count": len(self.nodules),
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["age_at_imaging_months"] = self.age_at_imaging_months
        d["tubers"] = [asdict(t) for t in self.tubers]
        d["nodules"] = [asdict(n) for n in self.nodules]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SubjectParams":
        d = dict(d)
        d.pop("age_at_imaging_months", None)
        d["tubers"] = tuple(Tuber(**t) for t in d.get("tubers", ()))
        d["nodules"] = tuple(Nodule(**n) for n in d.get("nodules", ()))
        return cls(**d)


def _lognormal_params(mean: float, sd: float) -> tuple[float, float]:
    """(mu, sigma) of the log-normal with this mean and SD."""
    s2 = math.log(1.0 + (sd / mean) ** 2)
    return math.log(mean) - s2 / 2.0, math.sqrt(s2)


class _LogNormal:
    """Log-normal distribution with closed-form CDF/PPF (scipy's frozen objects are slow)."""

    def __init__(self, mean: float, sd: float) -> None:
        self.mu, self.sigma = _lognormal_params(mean, sd)

    def cdf(self, x: float) -> float:
        if x <= 0.0:
            return 0.0
        return 0.5 * math.erfc(-(math.log(x) - self.mu) / (self.sigma * math.sqrt(2.0)))

    def ppf(self, q: float) -> float:
        return math.exp(self.mu + self.sigma * float(special.ndtri(q)))


@functools.lru_cache(maxsize=None)
def _lognorm(mean_sd: tuple[float, float]) -> _LogNormal:
    return _LogNormal(*mean_sd)


def _sample_truncated(rng: np.random.Generator, dist: Any, lo: float, hi: float) -> float:
    """Inverse-CDF draw from ``dist`` truncated to [lo, hi]."""
    a, b = dist.cdf(lo), dist.cdf(hi)
    return float(dist.ppf(a + rng.random() * (b - a)))


def expected_head_scale(age_months: float) -> float:
    """Linear head size relative to an adult brain of ~1350 ml, as a function of age.

    Brain volume is modelled as ``1350 - 850 * exp(-age / 20)`` ml (about 720 ml
    at 6 months, 1100 ml at 2 years, 1350 ml in adolescence).
    """
    volume = 1350.0 - 850.0 * math.exp(-age_months / 20.0)
    return (volume / 1350.0) ** (1.0 / 3.0)


def draw_subject(seed: int | np.random.Generator, model: LabelModel = DEFAULT_MODEL,
                 label: int | None = None) -> SubjectParams:
    """Draw one subject from the generative model.

    Args:
        seed: Integer seed or a numpy Generator.
        model: Label model parameters.
        label: Force the outcome label (for balanced sets); drawn when None.

    Returns:
        The drawn :class:`SubjectParams`.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    y = int(rng.random() < model.prevalence) if label is None else int(label)
    male = bool(rng.random() < model.p_male[y])
    onset = _sample_truncated(rng, _lognorm(model.age_onset_mean_sd[y]), 0.0, ONSET_MAX_MONTHS)
    onset = min(max(round(onset, 1), 0.1), ONSET_MAX_MONTHS)
    lo, hi = _delay_bounds(onset)
    age_m = onset + _sample_truncated(rng, _lognorm(model.delay_mean_sd(y)), lo, hi)
    age_days = int(round(age_m * DAYS_PER_MONTH))
    age_m = age_days / DAYS_PER_MONTH
    spasms = bool(rng.random() < model.p_spasms[y])
    asm = bool(rng.random() < model.p_asm_ge_3[y])
    head_scale = expected_head_scale(age_m) * float(np.clip(rng.normal(1.0, 0.03), 0.92, 1.08))

    n_tubers = int(rng.poisson(model.tuber_rate[y]))
    tubers = []
    for _ in range(n_tubers):
        lobe = LOBES[int(rng.choice(len(LOBES), p=model.lobe_probs[y]))]
        az, el = _lobe_direction(rng, lobe)
        tubers.append(Tuber(
            lobe=lobe,
            hemisphere="left" if rng.random() < 0.5 else "right",
            azimuth_deg=round(az, 2),
            elevation_deg=round(el, 2),
            depth=round(float(rng.uniform(0.72, 0.9)), 3),
            unit_radius_mm=round(float(np.exp(rng.normal(model.tuber_log_radius_mu[y],
                                                         model.tuber_log_radius_sigma))), 3),
            elongation=round(float(rng.uniform(1.1, 1.6)), 3),
            contrast=round(float(rng.uniform(0.8, 1.2)), 3),
        ))
    nodules = tuple(
        Nodule(hemisphere="left" if rng.random() < 0.5 else "right",
               position=round(float(rng.uniform(0.0, 1.0)), 3),
               radius_mm=round(float(rng.uniform(1.5, 4.0)), 2))
        for _ in range(int(rng.poisson(model.sen_rate)))
    )
    return SubjectParams(
        label=y, male=male, age_at_imaging_days=age_days, age_at_onset_months=float(onset),
        infantile_spasms=spasms, asm_count_ge_3=asm, head_scale=round(head_scale, 4),
        tubers=tuple(tubers), nodules=nodules, anatomy_seed=int(rng.integers(0, 2**31 - 1)),
    )


# Azimuth (0 = anterior, 90 = lateral, 180 = posterior) and elevation ranges per lobe.
_LOBE_RANGES = {
    "frontal": ((0.0, 55.0), (0.0, 55.0)),
    "parietal": ((70.0, 140.0), (35.0, 65.0)),
    "temporal": ((55.0, 115.0), (-35.0, -5.0)),
    "occipital": ((140.0, 175.0), (-15.0, 30.0)),
}


def _delay_bounds(onset: float) -> tuple[float, float]:
    """Truncation of the delay so that imaging is in [6, 192] months and >= onset + 0.5 month."""
    return max(MIN_DELAY_MONTHS, AGE_MIN_MONTHS - onset), AGE_MAX_MONTHS - onset


def _lobe_direction(rng: np.random.Generator, lobe: str) -> tuple[float, float]:
    (a0, a1), (e0, e1) = _LOBE_RANGES[lobe]
    return float(rng.uniform(a0, a1)), float(rng.uniform(e0, e1))


def _bernoulli_log(p: float, x: bool) -> float:
    return math.log(p if x else 1.0 - p)


def _log_mass(dist: Any, lo_trunc: float, hi_trunc: float, x_lo: float, x_hi: float) -> float:
    """log P(x in [x_lo, x_hi]) under ``dist`` truncated to [lo_trunc, hi_trunc]."""
    x_lo, x_hi = max(x_lo, lo_trunc), min(x_hi, hi_trunc)
    num = dist.cdf(x_hi) - dist.cdf(x_lo)
    den = dist.cdf(hi_trunc) - dist.cdf(lo_trunc)
    return math.log(max(num, 1e-300)) - math.log(max(den, 1e-300))


def clinical_log_likelihood(s: SubjectParams, y: int, model: LabelModel = DEFAULT_MODEL) -> float:
    """log p(sex, ages, spasms, ASM | y), ages as their discretisation bins."""
    ll = _bernoulli_log(model.p_male[y], s.male)
    half_day = 0.5 / DAYS_PER_MONTH
    age_m = s.age_at_imaging_months
    onset = s.age_at_onset_months
    onset_lo = 0.0 if onset <= 0.1 else onset - 0.05  # values below 0.05 were rounded up to 0.1
    ll += _log_mass(_lognorm(model.age_onset_mean_sd[y]), 0.0, ONSET_MAX_MONTHS, onset_lo, onset + 0.05)
    lo, hi = _delay_bounds(onset)
    ll += _log_mass(_lognorm(model.delay_mean_sd(y)), lo, hi, age_m - half_day - onset, age_m + half_day - onset)
    ll += _bernoulli_log(model.p_spasms[y], s.infantile_spasms)
    ll += _bernoulli_log(model.p_asm_ge_3[y], s.asm_count_ge_3)
    return ll


def imaging_log_likelihood(s: SubjectParams, y: int, model: LabelModel = DEFAULT_MODEL) -> float:
    """log p(tuber count, lobes, unit radii | y), up to terms that do not depend on y."""
    n = len(s.tubers)
    lam = model.tuber_rate[y]
    ll = n * math.log(lam) - lam
    mu, sigma = model.tuber_log_radius_mu[y], model.tuber_log_radius_sigma
    for t in s.tubers:
        z = (math.log(t.unit_radius_mm) - mu) / sigma
        ll += -0.5 * z * z + math.log(model.lobe_probs[y][LOBES.index(t.lobe)])
    return ll


def posterior_uncontrolled(s: SubjectParams, model: LabelModel = DEFAULT_MODEL,
                           use: str = "all") -> float:
    """Exact P(uncontrolled | observables) under the generative model.

    Args:
        s: The subject.
        model: Label model parameters.
        use: ``"all"``, ``"clinical"`` (sex, ages, spasms, ASM) or ``"imaging"`` (tubers).
    """
    logit = math.log(model.prevalence) - math.log(1.0 - model.prevalence)
    if use in ("all", "clinical"):
        logit += clinical_log_likelihood(s, 1, model) - clinical_log_likelihood(s, 0, model)
    if use in ("all", "imaging"):
        logit += imaging_log_likelihood(s, 1, model) - imaging_log_likelihood(s, 0, model)
    return 1.0 / (1.0 + math.exp(-logit))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    labels = np.asarray(labels).astype(bool)
    ranks = stats.rankdata(scores)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def best_achievable_auc(n_subjects: int = 500, seed: int = 0,
                        model: LabelModel = DEFAULT_MODEL) -> dict[str, Any]:
    """AUC of the exact posterior on ``n_subjects`` drawn subjects (no images rendered).

    Returns:
        Dict with ``n``, ``n_uncontrolled``, ``auc_all``, ``auc_clinical``, ``auc_imaging``.
    """
    rng = np.random.default_rng(seed)
    subjects = [draw_subject(rng, model) for _ in range(n_subjects)]
    labels = np.array([s.label for s in subjects])
    out: dict[str, Any] = {"n": n_subjects, "seed": seed, "n_uncontrolled": int(labels.sum())}
    for use in ("all", "clinical", "imaging"):
        scores = np.array([posterior_uncontrolled(s, model, use) for s in subjects])
        out[f"auc_{use}"] = round(auc(labels, scores), 4)
    return out
