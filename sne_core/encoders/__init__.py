"""Weight-space encoders: the masked set blocks and SNE.

`UnsupportedArchitecture` lives here (not in `sne`) so baselines can import it without pulling in
the SNE model: `from sne_core.encoders import UnsupportedArchitecture`.
"""


class UnsupportedArchitecture(ValueError):
    """A predictor cannot read this architecture; the message names the architecture and the reason."""
