"""Hot paths, one package each (csls, subword_embed; csls_dense beside them), every one with a plain-torch
reference and faster backends chosen per device by `xlfast.kernels.dispatch`."""
