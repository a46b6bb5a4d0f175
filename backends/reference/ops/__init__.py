"""numpy kernels of the reference backend, one module per family of layer kinds."""
