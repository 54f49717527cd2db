using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Benchmarks;

/// <summary>
/// <c>ReadVal&lt;ulong&gt;</c> on a resident page: one fresh reader per batch of 512 reads
/// that walk the page's 512 ulongs in order (the reader's creation is amortized over the
/// batch: BenchmarkDotNet divides by <see cref="Batch"/>). Beside it, the same 512 plain
/// loads through a pointer, and the same 512 reads as one-call <c>space.TryRead&lt;ulong&gt;(va, out _)</c>
/// (every check on every call: range, handler installed, thread state, gate).
/// </summary>
public unsafe class ReadValBenchmarks
{
    private const ulong Va = 1UL << 30;
    private const int Batch = (int)(Paging.PageSize / sizeof(ulong));

    private FramePool _pool = null!;
    private VmSpace _space = null!;
    private USegment _segment = null!;
    private ulong* _page;

    [GlobalSetup]
    public void Setup()
    {
        _pool = new FramePool(2UL << 20);
        _space = new VmSpace(new VmSpaceOptions { Size = 2UL << 30, Pool = _pool });
        _segment = _pool.AllocSegment(1);
        using (CursorMut c = _space.CursorMut(VaddrRange.FromLength(Va, Paging.PageSize))) c.Map(_segment, PageProperty.New(PageFlags.RW));
        _page = (ulong*)(_space.HostBase + (nint)Va);
        // SAFETY: the page was just mapped RW and dispatched; these are its first (resident-making) touches.
        for (int i = 0; i < Batch; i++) _page[i] = (ulong)i; // resident before measuring
        _space.Activate();
        Jit.Settle(() => PlainLoad(), () => ReadVal(), () => TryRead());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        VmSpace.Deactivate();
        _segment.Dispose();
        _space.Dispose();
        _pool.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Batch)]
    public ulong PlainLoad()
    {
        ulong sum = 0;
        ulong* p = _page;
        // SAFETY: the page stays mapped RW and resident for the whole benchmark (setup to cleanup).
        for (int i = 0; i < Batch; i++) sum += p[i];
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public ulong ReadVal()
    {
        VmReader<Fallible> reader = _space.Reader(Va, Paging.PageSize);
        ulong sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            IoResult<ulong> v = reader.ReadVal<ulong>();
            if (!v.IsOk) Fail();
            sum += v.Value;
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public ulong TryRead()
    {
        VmSpace space = _space;
        ulong sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            if (!space.TryRead(Va + (ulong)i * sizeof(ulong), out ulong v)) Fail();
            sum += v;
        }
        return sum;
    }

    private static void Fail() => throw new InvalidOperationException("a read of a resident page faulted");

    internal static IEnumerable<Row> Run(Settings s)
    {
        var summary = BenchmarkRunner.Run<ReadValBenchmarks>(Program.Config(s, oneShot: false));
        (double plain, int plainN) = Program.Median(summary, nameof(PlainLoad));
        (double uvm, int uvmN) = Program.Median(summary, nameof(ReadVal));
        yield return new Row("ReadVal<ulong>, resident page", "ns/op", Better.Lower, "plain pointer load (same process)",
            plain, uvm, Target.UvmAtMost(5, "ns"), uvmN, plainN,
            $"one space.Reader(va, 4096) per batch of {Batch} ReadVal<ulong> walking the page (IsOk checked, values summed); BenchmarkDotNet divides by {Batch}, so the reader's creation is amortized to 1/{Batch}; the peer is the same loop of plain loads, for scale only");
        (double one, int oneN) = Program.Median(summary, nameof(TryRead));
        yield return new Row("TryRead<ulong>, resident page (one call)", "ns/op", Better.Lower, "ReadVal<ulong> through a reader (same process)",
            uvm, one, Target.RatioAtMost(1.5), oneN, uvmN,
            Program.Inv($"space.TryRead<ulong>(va, out v) walking the page, {Batch} calls per invocation, every check on every call (range, handler installed, thread state, arena gate); no activation. Also judged: <= 5 ns ({(one <= 5 ? "met" : "NOT met")}, {one:F2} ns)"));
    }
}
