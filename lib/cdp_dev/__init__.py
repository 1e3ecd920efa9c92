"""Development tools kept out of the runtime package: the synthetic data generator, the benchmarks and the demo.

Installed with the checkout (`make install`), never shipped in the wheel or cdp.zip a cluster runs."""
