"""The named configurations of the paper's ablations (spec, section 4)."""

VARIANTS: dict[str, dict] = {
    # name: student filter, masked student views, reconstruction loss, distillation, p_com
    "folk": dict(filter="com_rcom", num_views=2, reconstruction=True, distillation=True),
    "mfm": dict(filter="mfm", num_views=1, reconstruction=True, distillation=False),
    "mfm_comrcom": dict(filter="com_rcom", num_views=1, reconstruction=True, distillation=False),
    "folk_mfm_filters": dict(filter="mfm", num_views=2, reconstruction=True, distillation=True),
    "folk_no_rec": dict(filter="com_rcom", num_views=2, reconstruction=False, distillation=True),
    "folk_com_only": dict(filter="com_rcom", num_views=2, reconstruction=True, distillation=True,
                          p_com=1.0),
    "folk_rcom_only": dict(filter="com_rcom", num_views=2, reconstruction=True, distillation=True,
                           p_com=0.0),
    "folk_random_frequency": dict(filter="random_frequency", num_views=2, reconstruction=True,
                                  distillation=True),
    "folk_random_patch": dict(filter="random_patch", num_views=2, reconstruction=True,
                              distillation=True),
    "dino_2view": dict(filter="none", num_views=2, reconstruction=False, distillation=True),
}
