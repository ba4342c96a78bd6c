"""Hot paths, one module each, every one with a plain-torch reference and faster backends chosen by
`xlfast.kernels.dispatch`."""
