using NUnit.Framework;
using UVm.Areas;
using UVm.Diagnostics;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// <see cref="VmSpaceDump"/> describes a small known layout line by line: runs grouped by rights,
/// backing and physical contiguity, shared and private frames told apart by reference count,
/// holes, I/O memory, areas and their kinds, and the statistics that close the dump.
/// </summary>
/// <remarks>Each test uses a fresh pool, so frame addresses are known: the pool hands out whole
/// free 2 MiB chunks in order, single frames one after the other from the chunk it is carving,
/// and an address space reserves a chunk of its own per 2 MiB region of guest addresses (frame
/// slot = page slot in the region).</remarks>
[TestFixture, NonParallelizable]
public sealed class SpaceDumps
{
    private const ulong Page = Paging.PageSize, MiB = 1UL << 20;
    private FramePool _pool = null!;

    [SetUp]
    public void CreatePool() => _pool = new FramePool(64 * MiB);

    [TearDown]
    public void DisposePool()
    {
        VmSpace.Deactivate();
        Assert.That(_pool.FramesInUse, Is.Zero, "frames leaked by the test");
        _pool.Dispose();
    }

    private VmSpaceOptions Options => new() { Size = 1UL << 30, Pool = _pool, MaxHostMappings = 100 };

    /// <summary>The dump's lines; the dump also goes to the test's output, for a person to read.</summary>
    private static string[] Lines(string dump)
    {
        TestContext.Out.WriteLine(dump);
        return dump.TrimEnd('\n').Split('\n');
    }

    [Test]
    public void Space_dump_lists_runs_holes_io_memory_and_statistics()
    {
        using var space = new VmSpace(Options);
        using var io = IoMem.CreateAnonymous(2 * MiB);
        using (USegment two = _pool.AllocSegment(2))
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x40_0000, 2 * Page)))
            c.Map(two, PageProperty.New(PageFlags.RW));                                   // frames 0x0, 0x1000
        using UFrame held = _pool.AllocFrame();                                            // frame 0x2000, a handle kept: shared
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x40_2000, Page))) c.Map(held, PageProperty.New(PageFlags.R));
        using (UFrame third = _pool.AllocFrame())                                          // frame 0x3000
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x40_3000, Page))) c.Map(third, PageProperty.New(PageFlags.RW));
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x60_0000, 2 * MiB))) c.MapIoMem(io, PageProperty.New(PageFlags.R), 2 * MiB, 0);
        space.Activate();
        var reader = space.Reader(0x40_3000, 2 * Page);
        CopyResult r = reader.ReadFallible(new byte[2 * Page]);                            // stops at the hole: one unresolved fault
        Assert.That(r.Bytes, Is.EqualTo(Page));

        string[] lines = Lines(VmSpaceDump.Describe(space));

        string ioStart = MappingRun.Hex(io.Paddr), ioEnd = MappingRun.Hex(io.Paddr + 2 * MiB);
        long id = VmSpaceDump.Statistics(space).SpaceId;
        Assert.That(lines, Is.EqualTo(new[]
        {
            $"VmSpace #{id} [000000000000-000040000000)",
            "000000000000-000000400000 --- hole (1024 pages)",
            "000000400000-000000402000 rw- frames 000000000000-000000002000 private (2 pages)",
            "000000402000-000000403000 r-- frames 000000002000-000000003000 shared x2 (1 page)",
            "000000403000-000000404000 rw- frames 000000003000-000000004000 private (1 page)",
            "000000404000-000000600000 --- hole (508 pages)",
            $"000000600000-000000800000 r-- iomem {ioStart}-{ioEnd} (512 pages)",
            "000000800000-000040000000 --- hole (260096 pages)",
            "resident 4 pages: private 3, shared 1; io memory 512 pages",
            "faults: demand-zero 0, copy-on-write 0, rights-restored 0, user-handler 0, spurious 0, unresolved 1",
            $"host: 7 mappings (limit 100), 4 syscalls; page table: {space.PageTableNodes} nodes",
        }));
    }

    [Test]
    public void Runs_and_statistics_are_structured_data()
    {
        using var space = new VmSpace(Options);
        using (USegment four = _pool.AllocSegment(4))
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x10_0000, 4 * Page)))
        {
            c.Map(four, PageProperty.New(PageFlags.RW, CachePolicy.Uncacheable));
        }

        IReadOnlyList<MappingRun> runs = VmSpaceDump.Runs(space);
        VmSpaceStatistics stats = VmSpaceDump.Statistics(space);

        Assert.That(runs, Is.EqualTo(new[]
        {
            new MappingRun(new VaddrRange(0, 0x10_0000), PageFlags.None, CachePolicy.Writeback, MappingBacking.Hole, 0, 0),
            new MappingRun(new VaddrRange(0x10_0000, 0x10_4000), PageFlags.RW, CachePolicy.Uncacheable, MappingBacking.Frames, 0, 1),
            new MappingRun(new VaddrRange(0x10_4000, 1UL << 30), PageFlags.None, CachePolicy.Writeback, MappingBacking.Hole, 0, 0),
        }));
        Assert.That(runs[1].ToString(), Is.EqualTo("000000100000-000000104000 rw- frames 000000000000-000000004000 private, cache Uncacheable (4 pages)"));
        Assert.That(runs[1].Pages, Is.EqualTo(4));
        Assert.That(runs[1].IsShared, Is.False);
        Assert.That(stats with { SpaceId = 0 }, Is.EqualTo(new VmSpaceStatistics(0, 4, 4, 0, 0, default, 3, 100, 1, space.PageTableNodes)));
    }

    [Test]
    public void Pages_split_where_frames_stop_being_contiguous()
    {
        using var space = new VmSpace(Options);
        using UFrame a = _pool.AllocFrame(), b = _pool.AllocFrame(), c = _pool.AllocFrame();   // 0x0, 0x1000, 0x2000
        using (CursorMut m = space.CursorMut(VaddrRange.FromLength(0x20_0000, 3 * Page)))
        {
            m.Map(a, PageProperty.New(PageFlags.R));
            m.Map(c, PageProperty.New(PageFlags.R));   // not contiguous with a
            m.Map(b, PageProperty.New(PageFlags.R));   // not contiguous with c either
        }
        a.Dispose(); b.Dispose(); c.Dispose();

        string[] lines = Lines(VmSpaceDump.Describe(space));

        Assert.That(lines[2..5], Is.EqualTo(new[]
        {
            "000000200000-000000201000 r-- frames 000000000000-000000001000 private (1 page)",
            "000000201000-000000202000 r-- frames 000000002000-000000003000 private (1 page)",
            "000000202000-000000203000 r-- frames 000000001000-000000002000 private (1 page)",
        }));
    }

    [Test]
    public void Address_space_dump_shows_areas_kinds_and_what_a_fork_shares()
    {
        using var parent = new AddressSpace(Options) { FaultAroundPages = 4 };
        parent.Map(16 * Page, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Addr = 0x20_0000, Flags = PageFlags.RW });
        parent.Map(2 * Page, new AreaBackend.Alloc(Populate: true), new VmMapOptions { Addr = 0x40_0000, Flags = PageFlags.R }); // chunk 0
        using (UFrame loose = _pool.AllocFrame())                               // chunk 1
        using (CursorMut c = parent.Space.CursorMut(VaddrRange.FromLength(0x80_0000, Page)))
            c.Map(loose, PageProperty.New(PageFlags.RW));                       // mapped outside every area
        parent.Space.Activate();
        var w = parent.Space.Writer(0x20_0000, 1);
        Assert.That(w.WriteFallible(new byte[] { 1 }).IsOk, Is.True);           // demand-zero: 4 pages at once, chunk 2

        using AddressSpace child = parent.Fork();
        child.FaultAroundPages = 1; // copy-on-write of the written page alone, not of its window
        child.Space.Activate();
        var cw = child.Space.Writer(0x20_1000, 1);
        Assert.That(cw.WriteFallible(new byte[] { 2 }).IsOk, Is.True);          // copy-on-write in the child, chunk 3 slot 1

        long pid = VmSpaceDump.Statistics(parent.Space).SpaceId, cid = VmSpaceDump.Statistics(child.Space).SpaceId;
        string[] parentLines = Lines(VmSpaceDump.Describe(parent)), childLines = Lines(VmSpaceDump.Describe(child));

        Assert.That(parentLines, Is.EqualTo(new[]
        {
            $"AddressSpace #{pid} [000000000000-000040000000), 2 areas",
            "area 000000200000-000000210000 rw- alloc (demand-zero)",
            "  000000200000-000000201000 r-- frames 000000400000-000000401000 shared x2 (1 page)",
            "  000000201000-000000202000 r-- frames 000000401000-000000402000 private (1 page)",
            "  000000202000-000000204000 r-- frames 000000402000-000000404000 shared x2 (2 pages)",
            "  000000204000-000000210000 --- not present (12 pages)",
            "area 000000400000-000000402000 r-- alloc (populated)",
            "  000000400000-000000402000 r-- frames 000000000000-000000002000 shared x2 (2 pages)",
            "outside areas",
            "  000000800000-000000801000 r-- frames 000000200000-000000201000 shared x2 (1 page)",
            "resident 7 pages: private 1, shared 6; io memory 0 pages",
            "faults: demand-zero 1, copy-on-write 0, rights-restored 0, user-handler 0, spurious 0, unresolved 0",
            $"host: {parentLines[12].Split(' ')[1]} mappings (limit 100), {parent.Space.HostStats.Syscalls} syscalls; page table: {parent.Space.PageTableNodes} nodes",
            "areas: demand-zero pages 4 (fault-around 4), copy-on-write copies 0 (0 pages), takeovers 0 (0 pages), rights restored 0, refused 0",
        }));
        Assert.That(childLines, Is.EqualTo(new[]
        {
            $"AddressSpace #{cid} [000000000000-000040000000), 2 areas",
            "area 000000200000-000000210000 rw- alloc (demand-zero)",
            "  000000200000-000000201000 r-- frames 000000400000-000000401000 shared x2 (1 page)",
            "  000000201000-000000202000 rw- frames 000000601000-000000602000 private (1 page)",
            "  000000202000-000000204000 r-- frames 000000402000-000000404000 shared x2 (2 pages)",
            "  000000204000-000000210000 --- not present (12 pages)",
            "area 000000400000-000000402000 r-- alloc (populated)",
            "  000000400000-000000402000 r-- frames 000000000000-000000002000 shared x2 (2 pages)",
            "outside areas",
            "  000000800000-000000801000 r-- frames 000000200000-000000201000 shared x2 (1 page)",
            "resident 7 pages: private 1, shared 6; io memory 0 pages",
            "faults: demand-zero 0, copy-on-write 1, rights-restored 0, user-handler 0, spurious 0, unresolved 0",
            $"host: {childLines[12].Split(' ')[1]} mappings (limit 100), {child.Space.HostStats.Syscalls} syscalls; page table: {child.Space.PageTableNodes} nodes",
            "areas: demand-zero pages 0 (fault-around 1), copy-on-write copies 1 (1 page), takeovers 0 (0 pages), rights restored 0, refused 0",
        }));
        Assert.That(int.Parse(parentLines[12].Split(' ')[1]), Is.EqualTo(parent.Space.CountHostMappings()));
    }

    [Test]
    public void Dump_of_a_disposed_space_throws()
    {
        var space = new VmSpace(Options);
        space.Dispose();
        Assert.Throws<ObjectDisposedException>(() => VmSpaceDump.Describe(space));
        Assert.Throws<ObjectDisposedException>(() => VmSpaceDump.Runs(space));
    }

    [Test]
    public void Fault_counts_of_a_plain_space_name_the_user_handler()
    {
        using var space = new VmSpace(Options);
        space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            using UFrame f = s.Pool.AllocFrame();
            using CursorMut c = s.CursorMut(VaddrRange.FromLength(info.Address & ~(Page - 1), Page));
            c.Map(f, PageProperty.New(PageFlags.RW));
            return true;
        });
        space.Activate();
        var reader = space.Reader(0x10_0000, 8);
        Assert.That(reader.ReadVal<ulong>().Unwrap(), Is.Zero);
        Assert.That(space.HandlePageFault(0x10_0000, PageFaultAccess.Read), Is.True);      // the table allows it: spurious

        PageFaultCounts faults = VmSpaceDump.Statistics(space).Faults;

        Assert.That(faults, Is.EqualTo(new PageFaultCounts(0, 0, 0, 1, 1, 0)));
        Assert.That(faults.Total, Is.EqualTo(2));
        Assert.That(PageFaultCounts.Of(space), Is.EqualTo(faults));
    }
}
