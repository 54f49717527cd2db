using System.Diagnostics;
using UVm.Faults;
using UVm.Frames;
using UVm.Host;
using UVm.Io;
using UVm.Spaces;
using UVm.Interop;

namespace UVm.Benchmarks;

/// <summary>
/// Fault round trips: a fallible <c>ReadVal&lt;byte&gt;</c> at each of N pages that the host
/// does not map, each resolved by UVm in managed code and retried. Two resolutions:
/// <list type="bullet">
/// <item><b>registered handler</b>: the page table is empty; the space's handler allocates a
/// frame and maps it at the faulting page with a cursor (one <c>mmap</c>), like the raw C peer's
/// signal handler mapping a memfd page.</item>
/// <item><b>spurious fill</b>: the page table maps all N pages, but the host arena was reset to
/// <c>PROT_NONE</c> behind UVm's back (what a stale TLB looks like); UVm finds the entry allows the
/// read and re-installs the host mapping of that one page.</item>
/// </list>
/// Stopwatch harness: each repetition consumes the state it measures (faults resolve once).
/// </summary>
internal static class FaultBenchmarks
{
    private const ulong Base = 1UL << 30;          // the pages live in the second GiB of the space
    private const ulong SpaceSize = 2UL << 30;

    internal static IEnumerable<Row> Run(Settings s, PeerResults peers)
    {
        PeerFigure? raw = peers.Get("fault_roundtrip_raw", "ns_per_fault");
        ulong pages = (ulong)(raw?.Number("pages") ?? (s.Quick ? 4096 : 65536));

        Samples handler = HandlerRoundTrip(pages, s.Warmups, s.Reps);
        long handlerAlloc = Interlocked.Read(ref s_lastAllocatedBytes);
        Samples resolveOnly = HandlerRoundTrip(pages, s.Warmups, s.Reps, resolveOnly: true);
        Samples spurious = SpuriousRoundTrip(pages, s.Warmups, s.Reps);
        long spuriousAlloc = Interlocked.Read(ref s_lastAllocatedBytes);
        PeerFigure? mmapPerPage = peers.Get("map_dispatch_raw_per_page", "ns_per_page");
        string breakdown = Program.Inv($"breakdown: space.HandlePageFault(va, Read) alone (the managed resolution + its mmap, no signal, no retried access) {Report.Fmt(resolveOnly.Median)} ns/fault") +
            (mmapPerPage is null ? "" : Program.Inv($", against {Report.Fmt(mmapPerPage.Median)} ns for one raw per-page mmap (map_dispatch_raw_per_page)")) +
            Program.Inv($"; managed bytes allocated per fault {(double)handlerAlloc / pages:F0}");

        string handlerNote = Program.Inv($"{pages} pages, one fallible ReadVal<byte> per page through one reader (Skip(4095) between), timed over the whole loop; the handler allocates a frame and maps it with a CursorMut (1 mmap each); between repetitions the range is unmapped and the pool trimmed (hole-punched) so each repetition starts from empty frames like the peer; HandledFaults checked == {pages}; {handler.Spread} ns; ") + breakdown;
        yield return new Row("fault round trip, registered handler", "ns/fault", Better.Lower, "raw C SIGSEGV+mmap (fault_roundtrip_raw)",
            raw?.Median, handler.Median, Target.RatioAtMost(1.3), handler.Count, raw?.Reps, raw is null ? peers.Missing("fault_roundtrip_raw") : handlerNote);
        foreach ((string scenario, string name) in new[]
                 {
                     ("fault_roundtrip_libsigsegv", "libsigsegv resolver"),
                     ("fault_roundtrip_uffd", "userfaultfd UFFDIO_COPY"),
                     ("fault_roundtrip_uffd_zeropage", "userfaultfd UFFDIO_ZEROPAGE"),
                 })
        {
            PeerFigure? p = peers.Get(scenario, "ns_per_fault");
            yield return new Row("fault round trip, registered handler", "ns/fault", Better.Lower, $"{name} ({scenario})",
                p?.Median, handler.Median, Target.Report, handler.Count, p?.Reps, p is null ? peers.Missing(scenario) : "");
        }
        yield return new Row("fault round trip, spurious fill", "ns/fault", Better.Lower, "raw C SIGSEGV+mmap (fault_roundtrip_raw)",
            raw?.Median, spurious.Median, Target.RatioAtMost(1.3), spurious.Count, raw?.Reps,
            Program.Inv($"{pages} pages mapped RW in the page table from one segment and dispatched; before each repetition the host range is reset to PROT_NONE with one raw mmap (the page table still maps every page: a stale TLB); each ReadVal<byte> faults, UVm re-installs that page (1 mmap) and retries; SpuriousFaults checked == {pages}. The frames stay resident in the memfd, so the retried load maps an existing shmem page, while the peer's allocates a fresh one (hole-punched memfd); {spurious.Spread} ns; managed bytes allocated per fault {(double)spuriousAlloc / pages:F0}"));
    }

    /// <summary>
    /// ns per fault resolved by a registered handler, over <paramref name="pages"/> pages. With
    /// <paramref name="resolveOnly"/>, no access is made: each page is resolved by calling
    /// <see cref="VmSpace.HandlePageFault(ulong, PageFaultAccess)"/> directly (the managed part and its mmap, without the signal and the retried access).
    /// </summary>
    internal static Samples HandlerRoundTrip(ulong pages, int warmups, int reps, bool resolveOnly = false)
    {
        ulong len = pages * Paging.PageSize;
        using var pool = new FramePool(RoundUp(len) + Paging.HugePageSize);
        using var space = new VmSpace(new VmSpaceOptions { Size = SpaceSize, Pool = pool });
        space.RegisterPageFaultHandler((VmSpace sp, in PageFaultInfo info) =>
        {
            using UFrame f = sp.Pool.AllocFrame();
            using CursorMut c = sp.CursorMut(VaddrRange.FromLength(info.Address & ~(Paging.PageSize - 1), Paging.PageSize));
            c.Map(f, PageProperty.New(PageFlags.RW));
            return true;
        });
        space.Activate();
        try
        {
            var range = VaddrRange.FromLength(Base, len);
            return Sampler.Run(warmups, reps,
                reset: () =>
                {
                    using (CursorMut c = space.CursorMut(range)) c.Unmap(len);
                    pool.Trim();
                    if (pool.FramesInUse != 0) throw new InvalidOperationException($"{pool.FramesInUse} frames still in use after unmapping");
                },
                sample: () =>
                {
                    long before = space.HandledFaults;
                    double ns = resolveOnly ? ResolveEachPage(space, Base, pages) : ReadEachPage(space, Base, pages);
                    long handled = space.HandledFaults - before;
                    if (handled != (long)pages) throw new InvalidOperationException($"expected {pages} handled faults, saw {handled}");
                    return ns;
                });
        }
        finally
        {
            VmSpace.Deactivate();
        }
    }

    /// <summary>ns per fault resolved by the spurious-fill path, over <paramref name="pages"/> pages.</summary>
    internal static Samples SpuriousRoundTrip(ulong pages, int warmups, int reps)
    {
        ulong len = pages * Paging.PageSize;
        using var pool = new FramePool(RoundUp(len) + Paging.HugePageSize);
        using var space = new VmSpace(new VmSpaceOptions { Size = SpaceSize, Pool = pool });
        using USegment segment = pool.AllocSegment(pages);
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(Base, len))) c.Map(segment, PageProperty.New(PageFlags.RW));
        space.Activate();
        try
        {
            return Sampler.Run(warmups, reps,
                reset: () => HostCall.CheckMap(Libc.Mmap(space.HostBase + (nint)Base, (nuint)len, Libc.PROT_NONE,
                    Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED | Libc.MAP_NORESERVE, -1, 0), "host reset to PROT_NONE"),
                sample: () =>
                {
                    long before = space.SpuriousFaults;
                    double ns = ReadEachPage(space, Base, pages);
                    long spurious = space.SpuriousFaults - before;
                    if (spurious != (long)pages) throw new InvalidOperationException($"expected {pages} spurious faults, saw {spurious}");
                    return ns;
                });
        }
        finally
        {
            VmSpace.Deactivate();
        }
    }

    /// <summary>Managed bytes the last measured loop allocated on its thread.</summary>
    private static long s_lastAllocatedBytes;

    /// <summary>Reads one byte of each page with one fallible reader; returns ns per page (the loop alone is timed).</summary>
    private static double ReadEachPage(VmSpace space, ulong va, ulong pages)
    {
        VmReader<Fallible> reader = space.Reader(va, pages * Paging.PageSize);
        ulong sum = 0, failedAt = ulong.MaxValue;
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        long t0 = Stopwatch.GetTimestamp();
        for (ulong i = 0; i < pages; i++)
        {
            IoResult<byte> v = reader.ReadVal<byte>();
            if (!v.IsOk)
            {
                failedAt = i;
                break;
            }
            sum += v.Value;
            reader.Skip(Paging.PageSize - 1);
        }
        long t1 = Stopwatch.GetTimestamp();
        Interlocked.Exchange(ref s_lastAllocatedBytes, GC.GetAllocatedBytesForCurrentThread() - allocated);
        if (failedAt != ulong.MaxValue) throw new InvalidOperationException($"the read of page {failedAt} failed");
        if (sum != 0) throw new InvalidOperationException("fresh frames did not read as zero");
        return Sampler.Ns(t0, t1) / pages;
    }

    /// <summary>Resolves each page with <see cref="VmSpace.HandlePageFault(ulong, PageFaultAccess)"/>, no access made; returns ns per page.</summary>
    private static double ResolveEachPage(VmSpace space, ulong va, ulong pages)
    {
        long t0 = Stopwatch.GetTimestamp();
        for (ulong i = 0; i < pages; i++)
        {
            if (!space.HandlePageFault(va + i * Paging.PageSize, PageFaultAccess.Read))
                throw new InvalidOperationException($"HandlePageFault refused page {i}");
        }
        long t1 = Stopwatch.GetTimestamp();
        return Sampler.Ns(t0, t1) / pages;
    }

    private static ulong RoundUp(ulong bytes) => (bytes + Paging.HugePageSize - 1) & ~(Paging.HugePageSize - 1);
}
