"""Analytic paediatric head phantom: tissue labels at physical points of the head frame.

The head frame is LPS in millimetres with its origin at the centre of the
cerebrum. Structures are ellipsoids and shells scaled by the subject's head
scale: scalp, skull, extra-axial CSF, a cerebral hull with a folded grey-matter
ribbon (sulci are the zero set of a random smooth field), white matter, deep
grey nuclei, lateral and third ventricles, interhemispheric fissure,
cerebellum, brainstem, tubers (cortical/subcortical, radially elongated
ellipsoids) and subependymal nodules on the lateral ventricle walls.

Labels are small integers (see :class:`Tissue`); tuber ``i`` has code
``TUBER_BASE + i`` and nodule ``j`` has ``NODULE_BASE + j`` so that each lesion
can have its own contrast. The *brain mask* of the ground truth is the inside
of the brain hull (cerebrum, cerebellum, brainstem), i.e. it includes sulcal
CSF and the ventricles and excludes the extra-axial CSF rim, skull and scalp,
like the masks HD-BET produces.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np

from .subject import SubjectParams

TUBER_BASE = 20
MAX_TUBERS = 80
NODULE_BASE = 100
MAX_NODULES = 100

# Semi-axes (mm) of the adult cerebral hull: left-right, anterior-posterior, inferior-superior.
ADULT_CEREBRUM_AXES = np.array([66.0, 82.0, 56.0])


class Tissue(IntEnum):
    """Label codes below the lesion codes."""

    AIR = 0
    SCALP = 1
    SKULL = 2
    CSF = 3
    GM = 4
    WM = 5
    VENTRICLE = 6
    DEEP_GM = 7
    SOFT_TISSUE = 8


def is_tuber(labels: np.ndarray) -> np.ndarray:
    return (labels >= TUBER_BASE) & (labels < TUBER_BASE + MAX_TUBERS)


def is_nodule(labels: np.ndarray) -> np.ndarray:
    return labels >= NODULE_BASE


class HeadPhantom:
    """The anatomy of one subject, evaluated at arbitrary points.

    Args:
        subject: The subject (head scale, tubers, nodules, anatomy seed).
    """

    def __init__(self, subject: SubjectParams) -> None:
        self.subject = subject
        s = subject.head_scale
        rng = np.random.default_rng(subject.anatomy_seed)
        self.scale = s
        self.axes = ADULT_CEREBRUM_AXES * s * rng.uniform(0.97, 1.03, size=3)
        self.csf_mm = 2.0 + 2.0 * (1.0 - s) / 0.26 * 0.5 + rng.uniform(0.0, 1.0)
        self.skull_mm = 2.5 + 3.5 * max(0.0, (s - 0.74) / 0.26)
        self.scalp_mm = 4.0 + rng.uniform(0.0, 2.0)
        self.gm_mm = 2.6
        self.sulcus_depth_mm = 11.0 * s
        # Folding field: sum of plane waves; sulci where it crosses zero.
        n_waves = 10
        k = rng.normal(size=(n_waves, 3))
        k /= np.linalg.norm(k, axis=1, keepdims=True)
        wavelength = rng.uniform(11.0, 16.0, size=(n_waves, 1))
        self.fold_k = (2.0 * math.pi * k / wavelength).astype(np.float32)
        self.fold_phase = rng.uniform(0.0, 2.0 * math.pi, size=n_waves).astype(np.float32)
        self.fold_norm = float(1.0 / math.sqrt(n_waves / 2.0))
        # Mean gradient magnitude of the normalised field, to turn |field| into a distance.
        self.fold_gradient = float(np.sqrt(np.mean(np.sum(self.fold_k.astype(float) ** 2, axis=1))))
        ax, ay, az = self.axes
        vent = rng.uniform(0.85, 1.35)
        self.ventricle_centres = [np.array([h * 0.12 * ax, -0.02 * ay, 0.16 * az]) for h in (1.0, -1.0)]
        self.ventricle_axes = np.array([0.075 * ax * vent, 0.40 * ay, 0.10 * az * vent])
        self.ventricle_bend = 0.22 * az
        self.deep_gm = [(np.array([h * 0.2 * ax, 0.02 * ay, -0.08 * az]), np.array([0.12 * ax, 0.24 * ay, 0.16 * az]))
                        for h in (1.0, -1.0)]
        self.third_ventricle = (np.array([0.0, 0.04 * ay, -0.06 * az]), np.array([1.6 * s + 0.5, 0.16 * ay, 0.10 * az]))
        self.cerebellum = (np.array([0.0, 0.50 * ay, -0.72 * az]), np.array([0.72 * ax, 0.34 * ay, 0.42 * az]))
        self.brainstem = (np.array([0.0, 0.16 * ay]), np.array([0.16 * ax, 0.2 * ay]), -0.15 * az)
        self.tubers = self._place_tubers()
        self.nodules = self._place_nodules()

    # -- geometry of the lesions -------------------------------------------------------------
    def _hull_point(self, u: np.ndarray) -> np.ndarray:
        rho = float(np.sqrt(np.sum((u / self.axes) ** 2)))
        return u / rho

    def _place_tubers(self) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
        out = []
        for t in self.subject.tubers[:MAX_TUBERS]:
            az, el = math.radians(t.azimuth_deg), math.radians(t.elevation_deg)
            h = 1.0 if t.hemisphere == "left" else -1.0  # LPS: +x is patient left
            u = np.array([h * math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
            centre = t.depth * self._hull_point(u)
            out.append((centre, u, t.unit_radius_mm * self.scale, t.elongation))
        return out

    def _place_nodules(self) -> list[tuple[np.ndarray, float]]:
        out = []
        vx, vy, vz = self.ventricle_axes
        for n in self.subject.nodules[:MAX_NODULES]:
            h = 1.0 if n.hemisphere == "left" else -1.0
            c = self.ventricle_centres[0 if h > 0 else 1]
            yy = (n.position * 1.5 - 0.75) * vy
            half = vx * math.sqrt(max(0.0, 1.0 - (yy / vy) ** 2))
            z = c[2] - self.ventricle_bend * (yy / vy) ** 2 - 0.3 * vz
            out.append((np.array([c[0] + h * 0.8 * half, c[1] + yy, z]), n.radius_mm * max(self.scale, 0.8)))
        return out

    def tuber_centres(self) -> np.ndarray:
        """Tuber centres in the head frame (mm), shape (n, 3)."""
        return np.array([c for c, _, _, _ in self.tubers]).reshape(-1, 3)

    def tuber_radii(self) -> np.ndarray:
        """Tangential radius of each tuber (mm)."""
        return np.array([r for _, _, r, _ in self.tubers])

    # -- labels --------------------------------------------------------------------------------
    def head_bound(self, points: np.ndarray) -> np.ndarray:
        """Cheap superset of the head (False = certainly air): outer ellipsoid and neck cylinder."""
        p = np.asarray(points, dtype=np.float32)
        ax, ay, az = (float(a) for a in self.axes)
        margin = self.csf_mm + self.skull_mm + self.scalp_mm + 1.0
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        head = ((x / (ax + margin)) ** 2 + (y / (ay + margin)) ** 2 + (z / (az + margin)) ** 2) <= 1.0
        neck = (z < -0.45 * az) & (((x / (0.85 * ax)) ** 2 + ((y - 0.1 * ay) / (0.9 * ay)) ** 2) < 1.0)
        return head | neck

    def labels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tissue label and brain-hull membership at points of the head frame.

        Args:
            points: (N, 3) float32 array of LPS mm coordinates in the head frame.

        Returns:
            ``(labels uint8 (N,), in_brain bool (N,))``.
        """
        p = np.asarray(points, dtype=np.float32)
        n = p.shape[0]
        labels = np.zeros(n, dtype=np.uint8)
        in_brain = np.zeros(n, dtype=bool)
        ax, ay, az = (float(a) for a in self.axes)
        c, k, sc = self.csf_mm, self.skull_mm, self.scalp_mm
        # Cheap outer bound first: most of a field of view is air.
        head = self.head_bound(p)
        idx = np.flatnonzero(head)
        if idx.size == 0:
            return labels, in_brain
        p = p[idx]
        x, y, z = p[:, 0], p[:, 1], p[:, 2]

        norm = np.sqrt(x * x + y * y + z * z)
        rho = np.sqrt((x / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2)
        d_cer = norm * (1.0 - 1.0 / np.maximum(rho, 1e-6))
        d_cb = np.full(p.shape[0], np.inf, dtype=np.float32)
        d_bs = np.full(p.shape[0], np.inf, dtype=np.float32)
        low = np.flatnonzero(z < 0.0)
        if low.size:
            cc, ca = self.cerebellum
            q = p[low] - cc.astype(np.float32)
            rho_cb = np.sqrt((q[:, 0] / ca[0]) ** 2 + (q[:, 1] / ca[1]) ** 2 + (q[:, 2] / ca[2]) ** 2)
            d_cb[low] = np.sqrt(np.einsum("ij,ij->i", q, q)) * (1.0 - 1.0 / np.maximum(rho_cb, 1e-6))
            (bx, by), (bax, bay), btop = self.brainstem
            pl = p[low]
            rho_bs = np.sqrt(((pl[:, 0] - bx) / bax) ** 2 + ((pl[:, 1] - by) / bay) ** 2)
            d_bs[low] = np.where(pl[:, 2] < btop, (rho_bs - 1.0) * bax, np.inf)
        d_ic = np.minimum(np.minimum(d_cer, d_cb), d_bs)

        lab = np.zeros(p.shape[0], dtype=np.uint8)
        lab[d_ic <= c + k + sc] = Tissue.SCALP
        lab[d_ic <= c + k] = Tissue.SKULL
        lab[d_ic <= c] = Tissue.CSF
        # Neck and skull base: soft tissue below the cerebrum inside the scalp outline.
        neck = (z < -0.45 * az) & (((x / (0.85 * ax)) ** 2 + ((y - 0.1 * ay) / (0.9 * ay)) ** 2) < 1.0)
        lab[neck & (d_ic > c + k + sc)] = Tissue.SOFT_TISSUE
        lab[neck & (d_ic > c) & (z < -0.75 * az)] = Tissue.SOFT_TISSUE

        inside = np.flatnonzero(d_ic <= 0.0)
        if inside.size:
            lab[inside] = self._inner_labels(p[inside], d_cer[inside], d_cb[inside])
            in_brain[idx[inside]] = True
        labels[idx] = lab
        return labels, in_brain

    def _inner_labels(self, p: np.ndarray, d_cer: np.ndarray, d_cb: np.ndarray) -> np.ndarray:
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        ax, ay, az = (float(a) for a in self.axes)
        out = np.full(p.shape[0], Tissue.WM, dtype=np.uint8)
        in_cer = d_cer <= 0.0
        depth = -d_cer

        # Cerebellum (outside the cerebrum): grey cortex, white core.
        cb = (~in_cer) & (d_cb <= 0.0)
        out[cb & (-d_cb < 5.0 * self.scale)] = Tissue.GM

        # Cortical ribbon and sulci.
        near = np.flatnonzero(in_cer & (depth < self.sulcus_depth_mm + self.gm_mm))
        if near.size:
            pn = p[near]
            f = np.sin(pn @ self.fold_k.T + self.fold_phase).sum(axis=1) * self.fold_norm
            # Convert the field to an approximate distance to its zero set (mm).
            dist = np.abs(f) / self.fold_gradient
            dn = depth[near]
            gm = (dn < self.gm_mm) | ((dist < 0.6 + self.gm_mm) & (dn < self.sulcus_depth_mm + self.gm_mm))
            csf = (dist < 0.6) & (dn < self.sulcus_depth_mm)
            sub = out[near]
            sub[gm] = Tissue.GM
            sub[csf] = Tissue.CSF
            out[near] = sub

        # Interhemispheric fissure above the corpus callosum.
        fissure = in_cer & (np.abs(x) < 1.2 + 0.6 * self.scale) & (z > 0.32 * az - 0.25 * az * (y / ay) ** 2)
        out[fissure] = Tissue.CSF

        # Deep structures only exist in a central box: evaluate them there.
        central = np.flatnonzero((np.abs(x) < 0.45 * ax) & (np.abs(y) < 0.55 * ay)
                                 & (z > -0.3 * az) & (z < 0.4 * az))
        if central.size:
            pc = p[central]
            sub = out[central]
            for centre, axes in self.deep_gm:
                sub[self._in_ellipsoid(pc, centre, axes)] = Tissue.DEEP_GM
            vx, vy, vz = self.ventricle_axes
            for centre in self.ventricle_centres:
                q = pc - centre.astype(np.float32)
                zb = q[:, 2] + self.ventricle_bend * (q[:, 1] / vy) ** 2
                sub[(q[:, 0] / vx) ** 2 + (q[:, 1] / vy) ** 2 + (zb / vz) ** 2 <= 1.0] = Tissue.VENTRICLE
            sub[self._in_ellipsoid(pc, *self.third_ventricle)] = Tissue.VENTRICLE
            out[central] = sub

        # Per-coordinate extent (1D reductions: an axis-0 reduction of an (N, 3) array is slow).
        lo = np.array([x.min(), y.min(), z.min()])
        hi = np.array([x.max(), y.max(), z.max()])
        for i, (centre, u, r, e) in enumerate(self.tubers):
            reach = r * e
            if np.any(centre + reach < lo) or np.any(centre - reach > hi):
                continue
            q = p - centre
            cand = np.flatnonzero(np.einsum("ij,ij->i", q, q) <= reach * reach)
            if cand.size == 0:
                continue
            qc = q[cand]
            along = qc @ u
            perp2 = np.einsum("ij,ij->i", qc, qc) - along * along
            hit = cand[((along / reach) ** 2 + perp2 / (r * r) <= 1.0) & in_cer[cand]]
            hit = hit[out[hit] != Tissue.VENTRICLE]
            out[hit] = TUBER_BASE + i
        for j, (centre, r) in enumerate(self.nodules):
            if np.any(centre + r < lo) or np.any(centre - r > hi):
                continue
            q = p - centre
            out[np.einsum("ij,ij->i", q, q) <= r * r] = NODULE_BASE + j
        return out

    @staticmethod
    def _in_ellipsoid(p: np.ndarray, centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
        q = (p - centre.astype(np.float32)) / axes.astype(np.float32)
        return np.einsum("ij,ij->i", q, q) <= 1.0
