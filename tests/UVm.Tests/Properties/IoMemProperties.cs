using System.Reflection;
using FsCheck;
using FsCheck.Fluent;
using NUnit.Framework;
using UVm.Faults;
using UVm.Frames;
using UVm.Host;
using UVm.Interop;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Reliability;
using static UVm.Tests.Properties.Extremes;

namespace UVm.Tests.Properties;

/// <summary>
/// I/O memory fed extreme integers: region sizes, file offsets and descriptors, physical
/// addresses to look up, and the lengths and offsets of <see cref="CursorMut.MapIoMem"/>; and a
/// region's <see cref="IoMem.Dispose"/> racing its mapping.
/// </summary>
/// <remarks>
/// <para>A region's physical range must be its own (2 MiB aligned, from 64 TiB up, not wrapping,
/// disjoint from every live region) and nameable by a page-table entry (whose address field
/// ends at 2^52): the class docs promise both ("a range of physical addresses of its own ...
/// so page-table entries can name it").</para>
/// <para>Physical ranges come from a process-wide counter that only grows. The extreme sizes
/// tried here would use it up for every later property and test of the process, so each
/// property puts it back where it found it once its regions are gone (a test-only reset, by
/// reflection; nothing of the library is changed).</para>
/// </remarks>
[TestFixture, NonParallelizable]
public sealed class IoMemProperties
{
    private const ulong MiB = 1UL << 20;
    private const ulong PaddrBase = 1UL << 46;
    private const ulong PteAddressLimit = 1UL << 52;
    private const ulong FileBytes = 16 * Page;

    private static readonly FieldInfo s_nextPaddr = typeof(IoMem).GetField("s_nextPaddr", BindingFlags.NonPublic | BindingFlags.Static)
        ?? throw new InvalidOperationException("IoMem keeps its physical-address counter elsewhere now: update the fixture's reset");
    private ulong _savedNextPaddr;

    private int _fd = -1;
    private FramePool _pool = null!;
    private RawWorld _world = null!;
    private SpaceWatch _watch = null!;
    private readonly Racer _racer = new();

    [OneTimeSetUp]
    public void OpenFile()
    {
        _fd = Libc.MemfdCreate("uvm-props-iomem", Libc.MFD_CLOEXEC);
        Assert.That(_fd, Is.GreaterThanOrEqualTo(0), "memfd_create");
        Assert.That(Libc.Ftruncate(_fd, (long)FileBytes), Is.Zero, "ftruncate");
    }

    [OneTimeTearDown]
    public void CloseFile()
    {
        _racer.Dispose();
        Libc.Close(_fd);
    }

    [SetUp]
    public void CreateWorld()
    {
        _savedNextPaddr = (ulong)s_nextPaddr.GetValue(null)!;
        _pool = new FramePool(16 * MiB);
        _world = new RawWorld(_pool);
        _watch = new SpaceWatch(_world.Space);
    }

    [TearDown]
    public void DisposeWorld()
    {
        _world.Dispose();
        ulong reached = (ulong)s_nextPaddr.GetValue(null)!;
        TestContext.Progress.WriteLine($"[properties] I/O physical addresses handed out up to {Hex(reached)} (from {Hex(_savedNextPaddr)}); counter put back");
        s_nextPaddr.SetValue(null, _savedNextPaddr);
        if (_pool.FramesInUse == 0) _pool.Dispose();
        else if (TestContext.CurrentContext.Result.Outcome.Status == NUnit.Framework.Interfaces.TestStatus.Passed)
            Assert.Fail($"the property's pool leaked {_pool.FramesInUse} frames");
    }

    /// <summary>A region is well formed: its physical range its own and nameable; its members what it was made with.</summary>
    private void CheckRegion(string call, IoMem io, ulong size, ulong fileOffset, params IoMem[] others)
    {
        Expect.Equal(io.Size, size, call, "Size");
        Expect.Equal(io.FileOffset, fileOffset, call, "FileOffset");
        Expect.That(io.Paddr % Huge == 0 && io.Paddr >= PaddrBase, call, $"Paddr {Hex(io.Paddr)} is not 2 MiB aligned from 64 TiB up");
        Expect.That(io.Paddr + size > io.Paddr, call, $"the physical range [{Hex(io.Paddr)}, +{Hex(size)}) wraps around 2^64");
        Expect.That(io.Paddr + size <= PteAddressLimit, call, $"the physical range [{Hex(io.Paddr)}, +{Hex(size)}) passes 2^52, beyond what a page-table entry can name");
        foreach (IoMem other in others)
            Expect.That(io.Paddr + size <= other.Paddr || other.Paddr + other.Size <= io.Paddr, call, $"the physical range overlaps {other}'s");
        Expect.That(io.Contains(io.Paddr) && io.Contains(io.Paddr + size - 1) && !io.Contains(io.Paddr + size) && !io.Contains(io.Paddr - 1), call, "Contains at the region's edges");
    }

    // ---- CreateAnonymous(size), FromFile(fd, offset, size) -----------------------------------------------------------------

    [Test, CancelAfter(180_000)]
    public void CreateAnonymous_of_any_size_makes_a_well_formed_region_or_refuses()
    {
        Gen<ulong> sizes = U64(Page, 4 * Page, Huge, PteAddressLimit - PaddrBase, 1UL << 62);
        PropertySuite.Check("IoMem.CreateAnonymous(size)", 400, sizes, size =>
        {
            string call = $"IoMem.CreateAnonymous({Hex(size)})";
            bool spanWraps = size > ulong.MaxValue - Huge + 1;
            Outcome<IoMem> o = Run.Of(() => IoMem.CreateAnonymous(size));
            bool ok = Contract.For(call)
                .Refuses<ArgumentException>(size == 0, "zero size")
                .Refuses<ArgumentException>(!Paging.IsAligned(size), "size not page aligned")
                .Refuses<ArgumentException>(spanWraps, "no physical range that large")
                .Refuses<ArgumentException>(size > IoMem.MaxSize, "size above IoMem.MaxSize")
                .MayRefuse(UVmError.NoMemory, true, "the physical addresses for I/O memory are used up")
                .MayRefuse(UVmError.HostNoMemory, true, "the host refuses the memfd")
                .Verify(o);
            if (!ok) return;
            using IoMem io = o.Value!;
            CheckRegion(call, io, size, 0, _world.IoRegion);
            PropertySuite.Tally("created");
        });
    }

    /// <summary>The descriptors tried: the test's memfd, the standard ones, and ones that are not open.</summary>
    private Gen<int> Descriptors => Gen.Frequency((6, Gen.Constant(_fd)), (1, Gen.Elements(0, 1, 2)), (2, Int32().Where(fd => fd < 0 || fd > 100_000)));

    [Test, CancelAfter(180_000)]
    public void FromFile_of_any_offset_size_and_descriptor_makes_a_well_formed_region_or_refuses()
    {
        var inputs = Gen.Zip(Descriptors, Gen.Zip(Mixed(Gen.Elements(0UL, Page, 8 * Page), FileBytes, 1UL << 62), Mixed(Gen.Elements(Page, 4 * Page, FileBytes), Page, PteAddressLimit - PaddrBase, 1UL << 62)));
        PropertySuite.Check("IoMem.FromFile(fd, offset, size)", 1000, inputs, t =>
        {
            (int fd, (ulong offset, ulong size)) = t;
            string call = $"IoMem.FromFile({fd}, {Hex(offset)}, {Hex(size)})";
            bool open = fd == _fd || fd is >= 0 and <= 2;
            Outcome<IoMem> o = Run.Of(() => IoMem.FromFile(fd, offset, size));
            bool ok = Contract.For(call)
                .Refuses<ArgumentException>(!Paging.IsAligned(offset), "offset not page aligned")
                .Refuses<ArgumentException>(size == 0 || !Paging.IsAligned(size), "size zero or not page aligned")
                .Refuses<ArgumentException>(size > ulong.MaxValue - Huge + 1, "no physical range that large")
                .Refuses<InvalidOperationException>(!open, "the descriptor is not open")
                .Refuses<ArgumentException>(size > IoMem.MaxSize, "size above IoMem.MaxSize")
                .MayRefuse(UVmError.NoMemory, true, "the physical addresses for I/O memory are used up")
                .Refuses<ArgumentException>(size <= IoMem.MaxSize && (offset + size < offset || offset + size > long.MaxValue), "the file range passes the largest file offset")
                .Verify(o);
            if (!ok) return;
            using IoMem io = o.Value!;
            CheckRegion(call, io, size, offset, _world.IoRegion);
            PropertySuite.Tally("created");
        });
    }

    // ---- Contains and FindIoMemByPaddr of any physical address ----------------------------------------------------------

    [Test, CancelAfter(180_000)]
    public void Contains_and_FindIoMemByPaddr_of_any_address_find_exactly_the_region_the_space_maps()
    {
        IoMem region = _world.IoRegion;
        using IoMem unmapped = IoMem.CreateAnonymous(2 * Page);
        var inputs = Gen.Zip(U64(region.Paddr, region.Paddr + region.Size, unmapped.Paddr, PaddrBase, 0), Gen.Elements(false, true));
        PropertySuite.Check("IoMem.Contains / CursorMut.FindIoMemByPaddr(paddr)", 1500, inputs, t =>
        {
            (ulong paddr, bool mutableCursor) = t;
            string call = $"Contains / FindIoMemByPaddr({Hex(paddr)}), the space maps {region}";
            bool inRegion = paddr >= region.Paddr && paddr - region.Paddr < region.Size;
            Expect.Equal(region.Contains(paddr), inRegion, call, "Contains");
            Expect.Equal(unmapped.Contains(paddr), paddr >= unmapped.Paddr && paddr - unmapped.Paddr < unmapped.Size, call, "Contains of another region");
            if (mutableCursor)
            {
                using CursorMut c = _world.Space.CursorMut(VaddrRange.FromLength(RawWorld.ScratchStart, Page));
                (IoMem IoMem, ulong Offset)? found = Contract.MustSucceed(call, Run.Of(() => c.FindIoMemByPaddr(paddr)));
                Expect.Equal(found, inRegion ? (region, paddr - region.Paddr) : null, call, "FindIoMemByPaddr");
            }
            _watch.AssertUnchanged(call);
        });
    }

    // ---- MapIoMem(io, prop, len, offset) ----------------------------------------------------------------------------------

    /// <summary>A MapIoMem case: which region, the cursor's pages, and the length and offset.</summary>
    public readonly record struct MapIoCase(int Region, ulong CursorPages, ulong Len, ulong Offset)
    {
        public static readonly string[] Regions =
        {
            "a 4-page anonymous region", "16 pages of a memfd from offset 0", "4 pages of a memfd from offset 2^47", "4 pages of a memfd from offset 2^63 - 8 pages",
            "4 pages of a memfd from offset 2^63 - 2 pages (past off_t)", "4 pages of a memfd from offset 2^52", "2^52 - 2^46 bytes of a memfd", "2^52 bytes of a memfd", "a closed region",
        };
        public const int Closed = 8;
        public override string ToString() => $"MapIoMem({Regions[Region]}, len {Hex(Len)}, offset {Hex(Offset)}) on a CursorMut of {CursorPages} pages";
    }

    [Test, CancelAfter(180_000)]
    public void MapIoMem_of_any_length_and_offset_maps_exactly_that_part_or_refuses_and_changes_nothing()
    {
        var regions = new IoMem?[MapIoCase.Regions.Length];
        regions[0] = IoMem.CreateAnonymous(4 * Page);
        regions[1] = IoMem.FromFile(_fd, 0, FileBytes);
        regions[2] = IoMem.FromFile(_fd, 1UL << 47, 4 * Page);
        regions[3] = IoMem.FromFile(_fd, (1UL << 63) - 8 * Page, 4 * Page);
        // Regions the docs may refuse to make; those that are made are mapped.
        regions[4] = Run.Of(() => IoMem.FromFile(_fd, (1UL << 63) - 2 * Page, 4 * Page)).Value;
        regions[5] = IoMem.FromFile(_fd, 1UL << 52, 4 * Page);
        regions[6] = Run.Of(() => IoMem.FromFile(_fd, 0, PteAddressLimit - PaddrBase)).Value;
        regions[7] = Run.Of(() => IoMem.FromFile(_fd, 0, PteAddressLimit)).Value;
        regions[MapIoCase.Closed] = IoMem.CreateAnonymous(Page);
        regions[MapIoCase.Closed]!.Dispose();
        // A pattern in the memfd's 16 pages, to read back through the mappings.
        var pattern = new byte[FileBytes];
        for (int i = 0; i < pattern.Length; i++) pattern[i] = (byte)(i * 31 + 7);
        unsafe
        {
            fixed (byte* p = pattern)
            {
                var iov = new Libc.IoVec { Base = (nint)p, Length = (nuint)pattern.Length };
                Assert.That(Libc.Pwritev(_fd, &iov, 1, 0), Is.EqualTo((nint)pattern.Length), "pwritev of the pattern");
            }
        }
        var inputs = Gen.Elements(Enumerable.Range(0, MapIoCase.Regions.Length).Where(i => regions[i] != null).ToArray()).SelectMany(region =>
        {
            ulong size = region == MapIoCase.Closed ? Page : regions[region]!.Size;
            return Gen.Zip(Gen.Elements(1UL, 2UL, 4UL, 16UL, 512UL),
                           Gen.Zip(Mixed(Gen.Elements(Page, 2 * Page, 4 * Page), Page, size, 1UL << 63), Mixed(Gen.Elements(0UL, Page, 2 * Page), size, size - Page, size - 2 * Page)))
                      .Select(t => new MapIoCase(region, t.Item1, t.Item2.Item1, t.Item2.Item2));
        });
        try
        {
            PropertySuite.Check("CursorMut.MapIoMem(io, len, offset)", 1500, inputs, m =>
            {
                string call = m.ToString();
                IoMem io = regions[m.Region]!;
                bool closed = m.Region == MapIoCase.Closed;
                var range = VaddrRange.FromLength(RawWorld.ScratchStart, m.CursorPages * Page);
                ulong length = closed || m.Offset >= io.Size ? 0 : Math.Min(m.Len, io.Size - m.Offset);
                Outcome<bool> mapped;
                Outcome<bool> dispatched;
                CursorMut c = _world.Space.CursorMut(range);
                try
                {
                    mapped = Run.Of(() => c.MapIoMem(io, PageProperty.New(PageFlags.RW), m.Len, m.Offset));
                }
                finally
                {
                    dispatched = Run.Of(c.Dispose);
                }
                bool ok = Contract.For(call)
                    .Refuses<ArgumentException>(!Paging.IsAligned(m.Len), "length not page aligned")
                    .Refuses<ArgumentException>(!Paging.IsAligned(m.Offset), "offset not page aligned")
                    .Refuses<ObjectDisposedException>(closed, "the region was disposed")
                    .Refuses<ArgumentOutOfRangeException>(!closed && m.Offset < io.Size && length > range.Length, "the mapping does not fit in the cursor's range")
                    .MayRefuse<ArgumentException>(!closed && io.FileOffset + m.Offset + length > long.MaxValue, "the file range passes what the host's offsets hold")
                    .Verify(mapped);
                List<MappedSlot> slots = Harness.MappedSlots(_world.Space, new VaddrRange(RawWorld.ScratchStart, RawWorld.ScratchEnd));
                // Disposing the cursor dispatches; the host may refuse (documented on DispatchTlbFlush), and then the map must not stay half made.
                if (!Contract.For(call + ", then the cursor's Dispose (dispatch)").MayRefuse(UVmError.HostNoMemory, ok && length > 0, "the host refuses the mapping").Verify(dispatched))
                {
                    PropertySuite.Tally("host refused");
                    Expect.That(slots.Count == 0, call, $"the host refused the mapping, yet the page table keeps {string.Join(", ", slots)}");
                    SpaceWatch.AssertMirror(_world.Space, call);
                }
                else if (ok)
                {
                    ulong mappedBytes = (ulong)slots.Sum(s => (long)s.Range.Length);
                    Expect.Equal(mappedBytes, Paging.IsAligned(m.Offset) ? length : 0, call, "bytes mapped");
                    foreach (MappedSlot s in slots)
                    {
                        ulong expected = io.Paddr + m.Offset + (s.Range.Start - range.Start);
                        Expect.That(s.Io && s.Paddr == expected, call, $"slot {s} does not map physical address {Hex(expected)}");
                        using CursorMut look = _world.Space.CursorMut(VaddrRange.FromLength(RawWorld.ScratchEnd, Page));
                        Expect.Equal(look.FindIoMemByPaddr(s.Paddr), (io, s.Paddr - io.Paddr), call, $"FindIoMemByPaddr of slot {s}");
                    }
                    if (slots.Count > 0)
                    {
                        SpaceWatch.AssertMirror(_world.Space, call);
                        CheckRead(call, m, io);
                    }
                    PropertySuite.Tally(slots.Count > 0 ? "mapped" : "nothing to map");
                }
                Harness.Unmap(_world.Space, RawWorld.ScratchStart, RawWorld.ScratchEnd - RawWorld.ScratchStart);
                _watch.AssertUnchanged(call);
            });
        }
        finally
        {
            foreach (IoMem? io in regions) io?.Dispose();
        }
    }

    /// <summary>The first mapped page reads what the file holds there, or faults (a bus error past the file's end); never anything else.</summary>
    private void CheckRead(string call, MapIoCase m, IoMem io)
    {
        var buf = new byte[64];
        CopyResult r = Harness.Read(_world.Space, RawWorld.ScratchStart, buf);
        ulong fileOffset = io.FileOffset + m.Offset;
        if (m.Region == 0)
        {
            Expect.That(r.IsOk, call, $"reading the anonymous region: {r}");
            return;
        }
        if (fileOffset + (ulong)buf.Length <= FileBytes)
        {
            Expect.That(r.IsOk, call, $"reading the file's bytes: {r}");
            for (int i = 0; i < buf.Length; i++)
                if (buf[i] != (byte)((fileOffset + (ulong)i) * 31 + 7)) throw new AssertionException($"{call}: byte {i} of the mapping reads {buf[i]}, the file holds {(byte)((fileOffset + (ulong)i) * 31 + 7)}");
            return;
        }
        Expect.That(r is { Bytes: 0, Error: UVmError.PageFault, Fault: { Kind: PageFaultKind.BusError } }, call, $"reading past the file's end must be a bus error, got {r}");
    }

    // ---- a region's Dispose racing its mapping ------------------------------------------------------------------------------

    /// <summary>MapIoMem of a fresh region raced against the region's Dispose.</summary>
    public readonly record struct IoRace(ulong Len, ulong Offset, int OffsetUs)
    {
        public override string ToString() => $"MapIoMem(len {Hex(Len)}, offset {Hex(Offset)}) of a 4-page region vs the region's Dispose {Racing.Offset(OffsetUs)}";
    }

    [Test, CancelAfter(180_000)]
    public void A_regions_Dispose_racing_its_mapping_ends_in_a_mapping_or_ObjectDisposedException()
    {
        var inputs = Gen.Zip(Gen.Zip(Mixed(Gen.Elements(Page, 4 * Page), Page, 4 * Page), Mixed(Gen.Elements(0UL, Page), 4 * Page)), Gen.Choose(-30, 60))
            .Select(t => new IoRace(t.Item1.Item1, t.Item1.Item2, t.Item2));
        PoolState baseline = PoolState.Of(_pool);
        PropertySuite.Check("IoMem.Dispose racing MapIoMem", 400, inputs, race =>
        {
            string call = race.ToString();
            IoMem io = IoMem.CreateAnonymous(4 * Page);
            using var space = new VmSpace(new VmSpaceOptions { Size = 2 * MiB, Pool = _pool });
            Outcome<bool> map = default;
            _racer.Race(
                () => map = Run.Of(() =>
                {
                    using CursorMut c = space.CursorMut(VaddrRange.FromLength(0, 4 * Page));
                    c.MapIoMem(io, PageProperty.New(PageFlags.RW), race.Len, race.Offset);
                }),
                io.Dispose, race.OffsetUs, call);
            bool ok = Contract.For(call)
                .MayRefuse<ObjectDisposedException>(true, "the region was disposed first")
                .Refuses<ArgumentException>(!Paging.IsAligned(race.Len) || !Paging.IsAligned(race.Offset), "not page aligned")
                .Refuses<ArgumentOutOfRangeException>(Paging.IsAligned(race.Len) && Paging.IsAligned(race.Offset) && race.Offset < 4 * Page && Math.Min(race.Len, 4 * Page - race.Offset) > 4 * Page, "does not fit")
                .Verify(map);
            List<MappedSlot> slots = Harness.MappedSlots(space);
            if (ok && race.Offset < 4 * Page && race.Len > 0)
            {
                Expect.Equal((ulong)slots.Sum(s => (long)s.Range.Length), Math.Min(race.Len, 4 * Page - race.Offset), call, "bytes mapped");
                // The space keeps the region it mapped: its memory stays readable after the creator's Dispose.
                space.Activate();
                CopyResult r = Harness.Read(space, 0, new byte[8]);
                VmSpace.Deactivate();
                Expect.That(r.IsOk, call, $"the mapped region does not read after its creator disposed it: {r}");
            }
            else
            {
                Expect.That(slots.Count == 0, call, $"refused, yet {string.Join(", ", slots)} is mapped");
            }
            SpaceWatch.AssertMirror(space, call);
            PropertySuite.Tally(map.Threw ? map.Error!.GetType().Name : "mapped");
            space.Dispose();
            baseline.AssertSame(_pool, call);
        });
    }
}
