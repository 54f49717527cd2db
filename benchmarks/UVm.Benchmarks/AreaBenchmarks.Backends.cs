using System.Diagnostics;
using UVm.Areas;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Benchmarks;

// The image and on-demand backends:
// * image: mapping a 64 MiB VmImage into a new space (nothing copied) against copying the same
//   64 MiB into a fresh lazy area of a new space with one WriteFallible (demand-zero faults and
//   the copy), both measured here;
// * on-demand: the fault round trip of an on-demand area whose callback fills each page from a
//   4 KiB buffer, against userfaultfd resolving each missing page with UFFDIO_COPY from a 4 KiB
//   source page (benchmarks/peers/fault_uffd.c).
internal static partial class AreaBenchmarks
{
    private const ulong ImageBytes = 64 * MiB;

    private static Row ImageMapRow(Settings s)
    {
        (Samples map, Samples copy) = MeasureImageMap(s.Warmups, s.Reps);
        string note = Program.Inv(
            $"a 64 MiB VmImage (contents: a byte pattern) made once; per repetition a new AddressSpace, then timed: Map(64 MiB, AreaBackend.Image) (one host mmap of the image's contiguous frames, no copy; the pool's FramesInUse checked unchanged and the first page's reference count 2) ") + Program.Inv(
            $"vs Map(64 MiB, lazy Alloc) + one Writer.WriteFallible of the 64 MiB (demand-zero faults with fault-around 16, and the copy); contents of both read back and compared outside the timing; the space disposed and the pool trimmed between repetitions; map {map.Spread} us, copy {copy.Spread} us");
        return new Row("map a 64 MiB image into a new space", "us", Better.Lower, "copy it in with WriteFallible (UVm)",
            copy.Median, map.Median, Target.RatioAtMost(0.05), map.Count, copy.Count, note);
    }

    /// <summary>Microseconds to map a 64 MiB image into a new space, and to copy the same bytes into a new space's lazy area.</summary>
    internal static (Samples Map, Samples Copy) MeasureImageMap(int warmups, int reps)
    {
        var contents = new byte[ImageBytes];
        for (int i = 0; i < contents.Length; i++) contents[i] = (byte)(i * 7 + (i >> 12) | 1);
        return WithPool(pool =>
        {
            using VmImage image = VmImage.FromBytes(contents, pool);
            long imageFrames = pool.FramesInUse;
            AddressSpace? space = null;
            try
            {
                Samples map = Sampler.Run(warmups, reps,
                    reset: () => { space?.Dispose(); pool.Trim(); space = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = pool }); },
                    sample: () =>
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        space!.Map(ImageBytes, new AreaBackend.Image(image, 0), new VmMapOptions { Addr = AreaBase, Flags = PageFlags.R });
                        long t1 = Stopwatch.GetTimestamp();
                        if (pool.FramesInUse != imageFrames) throw new InvalidOperationException($"mapping the image allocated {pool.FramesInUse - imageFrames} frames");
                        if (pool.ReferenceCount(0) != 2) throw new InvalidOperationException($"the image's first frame has {pool.ReferenceCount(0)} references, not 2");
                        CheckBytes(space, contents, "the image area");
                        return Sampler.Ns(t0, t1) / 1000;
                    });
                Samples copy = Sampler.Run(warmups, reps,
                    reset: () => { space?.Dispose(); pool.Trim(); space = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = pool }); space.Space.Activate(); },
                    sample: () =>
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        space!.Map(ImageBytes, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Addr = AreaBase, Flags = PageFlags.RW });
                        VmWriter<Fallible> w = space.Space.Writer(AreaBase, ImageBytes);
                        CopyResult r = w.WriteFallible(contents);
                        long t1 = Stopwatch.GetTimestamp();
                        if (!r.IsOk) throw new InvalidOperationException($"the copy stopped after {r.Bytes} bytes: {r.Error}");
                        CheckBytes(space, contents, "the copied area");
                        return Sampler.Ns(t0, t1) / 1000;
                    });
                return (map, copy);
            }
            finally
            {
                space?.Dispose();
            }
        });
    }

    private static void CheckBytes(AddressSpace space, byte[] expected, string what)
    {
        space.Space.Activate();
        var actual = new byte[expected.Length];
        VmReader<Fallible> r = space.Space.Reader(AreaBase, (ulong)expected.Length);
        CopyResult res = r.ReadFallible(actual);
        if (!res.IsOk || !actual.AsSpan().SequenceEqual(expected)) throw new InvalidOperationException($"{what} does not hold the image ({res.Error})");
    }

    private static Row OnDemandRow(Settings s, PeerResults peers)
    {
        PeerFigure? peer = peers.Get("fault_roundtrip_uffd", "ns_per_fault");
        ulong pages = (ulong)(peer?.Number("pages") ?? (s.Quick ? 4096 : 65536));
        Samples fill = MeasureOnDemandFill(pages, s.Warmups, s.Reps);
        string note = Program.Inv(
            $"{pages} pages of an on-demand area (RW) whose PageFill copies a 4 KiB source buffer into the span it is given; one fallible ReadVal<byte> per page through one reader (Skip(4095) between), the loop timed; ") + Program.Inv(
            $"OnDemandFills checked == {pages} and every page read back outside the timing; between repetitions the area is unmapped and mapped again and the pool trimmed (the peer: MADV_DONTNEED); the peer's handler thread resolves each fault with UFFDIO_COPY; {fill.Spread} ns");
        return new Row("on-demand fill round trip (callback fills from a buffer)", "ns/fault", Better.Lower, "userfaultfd UFFDIO_COPY (fault_roundtrip_uffd)",
            peer?.Median, fill.Median, Target.RatioAtMost(1.2), fill.Count, peer?.Reps, peer is null ? peers.Missing("fault_roundtrip_uffd") + "; " + note : note);
    }

    /// <summary>ns per first access to a page of an on-demand area whose callback copies a 4 KiB buffer.</summary>
    internal static Samples MeasureOnDemandFill(ulong pages, int warmups, int reps)
    {
        ulong len = pages * Page;
        var source = new byte[Page];
        for (int i = 0; i < source.Length; i++) source[i] = (byte)(i | 1);
        var range = VaddrRange.FromLength(AreaBase, len);
        var backend = new AreaBackend.OnDemand((va, page) => { source.CopyTo(page); return true; });
        return WithPool(pool =>
        {
            using var space = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = pool });
            space.Space.Activate();
            return Sampler.Run(warmups, reps,
                reset: () =>
                {
                    if (space.Areas.Count > 0) space.Unmap(range);
                    pool.Trim();
                    Scenario.CheckEmpty(pool, "after unmapping the area", noReservations: false);
                    space.Map(len, backend, new VmMapOptions { Addr = AreaBase, Flags = PageFlags.RW });
                },
                sample: () =>
                {
                    long fills = space.Stats.OnDemandFills;
                    ulong sum = 0;
                    long t0 = Stopwatch.GetTimestamp();
                    VmReader<Fallible> r = space.Space.Reader(AreaBase, len);
                    for (ulong i = 0; i < pages; i++)
                    {
                        IoResult<byte> v = r.ReadVal<byte>();
                        if (!v.IsOk) throw new InvalidOperationException($"the read of page {i} failed: {v.Error}");
                        sum += v.Value;
                        if (i + 1 < pages) r.Skip(Page - 1);
                    }
                    long t1 = Stopwatch.GetTimestamp();
                    if (space.Stats.OnDemandFills - fills != (long)pages) throw new InvalidOperationException($"expected {pages} fills, saw {space.Stats.OnDemandFills - fills}");
                    if (sum != pages * source[0]) throw new InvalidOperationException("the pages do not hold the source's first byte");
                    CheckPages(space, AreaBase, pages, "the on-demand area", (_, page) => source.CopyTo(page));
                    return Sampler.Ns(t0, t1) / pages;
                });
        });
    }
}
