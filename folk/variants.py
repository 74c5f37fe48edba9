"""The named configurations of the paper's ablations (docs/METHOD.md, section 4).

Each variant fixes the ``method.*`` keys (student filter, masked student views,
reconstruction loss, distillation, p_com) and names the recipes of the method it
reproduces (folk/recipes.py): ``augment`` for ``augment.preset: auto`` and ``optim`` for
``pretrain.optim_recipe: auto``. FOLK pre-trains with MFM's optimiser settings and DINO's
augmentation (with its own blur choice); MFM's reproductions train like MFM's code and the
no-masking baseline like DINO's.
"""

_FOLK = dict(augment="folk", optim="mfm")
_MFM = dict(augment="mfm", optim="mfm")

VARIANTS: dict[str, dict] = {
    "folk": dict(filter="com_rcom", num_views=2, reconstruction=True, distillation=True, **_FOLK),
    "mfm": dict(filter="mfm", num_views=1, reconstruction=True, distillation=False, **_MFM),
    "mfm_comrcom": dict(
        filter="com_rcom", num_views=1, reconstruction=True, distillation=False, **_MFM
    ),
    "folk_mfm_filters": dict(
        filter="mfm", num_views=2, reconstruction=True, distillation=True, **_FOLK
    ),
    "folk_no_rec": dict(
        filter="com_rcom", num_views=2, reconstruction=False, distillation=True, **_FOLK
    ),
    "folk_com_only": dict(
        filter="com_rcom", num_views=2, reconstruction=True, distillation=True, p_com=1.0, **_FOLK
    ),
    "folk_rcom_only": dict(
        filter="com_rcom", num_views=2, reconstruction=True, distillation=True, p_com=0.0, **_FOLK
    ),
    "folk_random_frequency": dict(
        filter="random_frequency", num_views=2, reconstruction=True, distillation=True, **_FOLK
    ),
    "folk_random_patch": dict(
        filter="random_patch", num_views=2, reconstruction=True, distillation=True, **_FOLK
    ),
    "dino_2view": dict(
        filter="none",
        num_views=2,
        reconstruction=False,
        distillation=True,
        augment="dino",
        optim="dino",
    ),
}
