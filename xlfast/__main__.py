"""`python -m xlfast …`: the `xlfast` command, as torchrun launches it (`torchrun --nproc-per-node N -m xlfast train …`)."""
from xlfast.cli.main import app

app(prog_name="xlfast")
