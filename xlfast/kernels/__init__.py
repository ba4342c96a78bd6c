"""Hot paths, one package each (csls, subword_embed, linear_ce; csls_dense beside them), every one with a
plain-torch reference and faster backends chosen per device by `xlfast.kernels.dispatch`. `coverage` (the
lexicon coverage of sentence pairs for mining) is sparse integer work with one Numba CPU kernel and a
dense reference."""
