using NUnit.Framework;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Reliability;

/// <summary>Helpers every reliability fixture shares: snapshots, invariants, seeds, environment switches.</summary>
public static class Harness
{
    public const ulong Page = Paging.PageSize;
    public const ulong Huge = Paging.HugePageSize;
    public const ulong MiB = 1UL << 20;
    public const ulong GiB = 1UL << 30;

    /// <summary>Whether the long soak runs (<c>UVM_SOAK=1</c>).</summary>
    public static bool Soak => Environment.GetEnvironmentVariable("UVM_SOAK") == "1";

    /// <summary>The seed of a randomized test: <c>UVM_SEED</c> if set, else fresh. Printed so a failure can be replayed.</summary>
    public static int Seed(string what) => Seeds.For(what);

    /// <summary>Every mapped slot of <paramref name="space"/>, in address order (frame handles are released again).</summary>
    public static List<MappedSlot> MappedSlots(VmSpace space) => MappedSlots(space, new VaddrRange(0, space.Size));

    /// <summary>Every mapped slot of <paramref name="range"/> of <paramref name="space"/>.</summary>
    public static List<MappedSlot> MappedSlots(VmSpace space, VaddrRange range) => GuestMemory.Slots(space, range);

    /// <summary>The state a failed call must leave exactly as it was.</summary>
    public sealed record SpaceState(List<MappedSlot> Slots, long FramesInUse)
    {
        public static SpaceState Of(VmSpace space) => new(MappedSlots(space), space.Pool.FramesInUse);

        /// <summary>Asserts that <paramref name="space"/> is as captured and that its host mirrors its page table.</summary>
        public void AssertSame(VmSpace space, string what)
        {
            List<MappedSlot> now = MappedSlots(space);
            Assert.That(now, Is.EqualTo(Slots), $"{what}: the page table changed");
            Assert.That(MirrorDiffs(space), Is.Empty, $"{what}: the host no longer mirrors the page table");
            Assert.That(space.Pool.FramesInUse, Is.EqualTo(FramesInUse), $"{what}: frames in use changed");
        }
    }

    /// <summary>
    /// The reference-count invariant across <paramref name="spaces"/> sharing <paramref name="pool"/>:
    /// each frame's count is its mappings plus the handles the test holds
    /// (<paramref name="handles"/>: Paddr → count), and the pool's frames in use are exactly those frames.
    /// Returns the number of frames checked.
    /// </summary>
    public static int CheckReferenceCounts(FramePool pool, IEnumerable<VmSpace> spaces, IReadOnlyDictionary<ulong, int>? handles = null)
    {
        var expected = new Dictionary<ulong, int>();
        foreach (VmSpace space in spaces)
        {
            foreach (MappedSlot s in MappedSlots(space))
            {
                if (s.Io) continue;
                expected[s.Paddr] = expected.GetValueOrDefault(s.Paddr) + 1;
            }
        }
        if (handles != null)
            foreach ((ulong paddr, int n) in handles) expected[paddr] = expected.GetValueOrDefault(paddr) + n;
        var wrong = new List<string>();
        foreach ((ulong paddr, int n) in expected)
        {
            int actual = pool.ReferenceCount(paddr);
            if (actual != n && wrong.Count < 16) wrong.Add($"frame 0x{paddr:x}: {actual} references, {n} expected");
        }
        Assert.That(wrong, Is.Empty, "reference counts disagree with the mappings and handles");
        Assert.That(pool.FramesInUse, Is.EqualTo(expected.Count), "frames in use are not exactly the mapped and held frames");
        return expected.Count;
    }

    /// <summary>See <see cref="GuestMemory.MirrorDiffs"/>.</summary>
    public static MirrorReport MirrorDiffs(VmSpace space) => GuestMemory.MirrorDiffs(space);

    /// <summary>Asserts that every space's host mirrors its page table.</summary>
    public static void CheckHostMirrors(IEnumerable<VmSpace> spaces)
    {
        foreach (VmSpace space in spaces)
            Assert.That(MirrorDiffs(space), Is.Empty, $"space at 0x{space.HostBase:x}: host and page table differ");
    }

    /// <summary>Maps a fresh frame holding <paramref name="contents"/> at <paramref name="va"/>; the handle is dropped (the mapping keeps the frame).</summary>
    public static ulong MapFrame(VmSpace space, ulong va, ReadOnlySpan<byte> contents, PageFlags flags = PageFlags.RW) =>
        GuestMemory.MapNewFrame(space, va, contents, flags);

    /// <summary>Maps a fresh frame filled with <paramref name="fill"/> at <paramref name="va"/>.</summary>
    public static ulong MapFilled(VmSpace space, ulong va, byte fill, PageFlags flags = PageFlags.RW)
    {
        Span<byte> page = stackalloc byte[(int)Page];
        page.Fill(fill);
        return MapFrame(space, va, page, flags);
    }

    /// <summary>Unmaps <c>[va, va + len)</c> through a cursor of its own; returns the frames unmapped.</summary>
    public static ulong Unmap(VmSpace space, ulong va, ulong len) => GuestMemory.Unmap(space, va, len);

    /// <summary>Reads guest memory through a fallible reader of the space activated on this thread.</summary>
    public static CopyResult Read(VmSpace space, ulong va, Span<byte> into)
    {
        VmReader<Fallible> r = space.Reader(va, (ulong)into.Length);
        return r.ReadFallible(into);
    }

    /// <summary>Writes guest memory through a fallible writer of the space activated on this thread.</summary>
    public static CopyResult Write(VmSpace space, ulong va, ReadOnlySpan<byte> from)
    {
        VmWriter<Fallible> w = space.Writer(va, (ulong)from.Length);
        return w.WriteFallible(from);
    }

    /// <summary>Runs <paramref name="body"/> on a new thread and waits for it (with a deadline), rethrowing its failure.</summary>
    public static void OnOtherThread(Action body) => Deadlines.OnOtherThread(body, "reliability helper");
}
