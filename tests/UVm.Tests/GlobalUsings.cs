// The helpers every fixture shares (TestSupport/): deadlines, seeds, guest memory.
global using UVm.Tests.TestSupport;
