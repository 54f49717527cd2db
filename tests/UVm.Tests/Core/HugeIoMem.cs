using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>
/// Untracked I/O memory: 2 MiB entries where address and region are aligned, split on partial
/// unmap, protect or overwrite; found again by physical address; kept open by the space.
/// </summary>
public sealed class HugeIoMem : SpaceFixture
{
    private const ulong Va = 2 * Huge;              // 4 MiB, 2 MiB aligned
    private const ulong RegionSize = 2 * Huge;      // 4 MiB

    private IoMem _io = null!;

    [SetUp]
    public void CreateRegion() => _io = IoMem.CreateAnonymous(RegionSize);

    [TearDown]
    public void DisposeRegion() => _io.Dispose();

    private ulong Ino => _io.Identity.Ino;

    private void MapRegion(ulong va = Va, ulong len = RegionSize, ulong offset = 0, PageProperty? prop = null)
    {
        using CursorMut c = Space.CursorMut(Span(va, len));
        c.MapIoMem(_io, prop ?? RW, len, offset);
    }

    private static string Io(ulong va, ulong size, ulong paddr, PageProperty prop) =>
        $"{Span(va, size)} io 0x{paddr:x} {prop with { PrivFlags = prop.PrivFlags | PrivilegedPageFlags.Avail1 }}";

    /// <summary>Writes a distinct value at the start of every page of the region, through the host.</summary>
    private void TagEveryPage(ulong va)
    {
        HostMaps.TagPages(Space, va, RegionSize, off => 0x10_0000 + off);
    }

    [Test]
    public void A_2MiB_aligned_map_of_a_4MiB_region_uses_two_huge_entries()
    {
        MapRegion();

        Assert.That(QueryAt(Va), Is.EqualTo(Io(Va, Huge, _io.Paddr, RW)));
        Assert.That(QueryAt(Va + Huge), Is.EqualTo(Io(Va + Huge, Huge, _io.Paddr + Huge, RW)));
        Assert.That(QueryAt(Va + Huge / 2), Is.EqualTo(Io(Va, Huge, _io.Paddr, RW)), "a query inside reports the whole huge slot");
        Assert.That(Snapshot(Span(Va, RegionSize)), Has.Count.EqualTo(2));
        Assert.That(Space.PageTableNodes, Is.EqualTo(3), "root, 1 GiB-level and 2 MiB-level nodes: no last-level node");

        HostMaps.AssertMapsFile(Space, Va, Ino, 0, "rw-s");
        HostMaps.AssertMapsFile(Space, Va + RegionSize - Page, Ino, RegionSize - Page, "rw-s");
        HostMaps.AssertReserved(Space, Va - Page);
        HostMaps.AssertReserved(Space, Va + RegionSize);
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Mapping_a_region_takes_no_frame_and_no_frame_reference()
    {
        MapRegion();
        Assert.That(Pool.FramesInUse, Is.Zero);
        Assert.That(UnmapAt(Va, RegionSize), Is.Zero, "untracked pages are not counted as frames");
        Assert.That(Space.HostStats.MmapCalls, Is.EqualTo(2), "one mmap to map, one to unmap");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void The_region_contents_are_shared_between_its_mappings()
    {
        const ulong second = 8 * Huge;
        MapRegion();
        MapRegion(second);
        TagEveryPage(Va);
        for (ulong off = 0; off < RegionSize; off += 64 * Page)
            Assert.That(HostMaps.ReadU64(Space, second + off), Is.EqualTo(0x10_0000 + off));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Partial_unmap_splits_the_huge_entry_and_keeps_the_neighbours()
    {
        MapRegion();
        TagEveryPage(Va);

        Assert.That(UnmapAt(Va + 2 * Page, Page), Is.Zero);

        Assert.That(QueryAt(Va + Page), Is.EqualTo(Io(Va + Page, Page, _io.Paddr + Page, RW)));
        Assert.That(QueryAt(Va + 2 * Page), Is.EqualTo(Hole(Va + 2 * Page, Va + 3 * Page)));
        Assert.That(QueryAt(Va + 3 * Page), Is.EqualTo(Io(Va + 3 * Page, Page, _io.Paddr + 3 * Page, RW)));
        Assert.That(QueryAt(Va + Huge - Page), Is.EqualTo(Io(Va + Huge - Page, Page, _io.Paddr + Huge - Page, RW)));
        Assert.That(QueryAt(Va + Huge), Is.EqualTo(Io(Va + Huge, Huge, _io.Paddr + Huge, RW)), "the other huge entry is untouched");

        HostMaps.AssertMapsFile(Space, Va + Page, Ino, Page, "rw-s");
        HostMaps.AssertReserved(Space, Va + 2 * Page);
        HostMaps.AssertMapsFile(Space, Va + 3 * Page, Ino, 3 * Page, "rw-s");
        Assert.That(HostMaps.ReadU64(Space, Va + Page), Is.EqualTo(0x10_0000 + Page));
        Assert.That(HostMaps.ReadU64(Space, Va + 3 * Page), Is.EqualTo(0x10_0000 + 3 * Page));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Unmapping_a_span_across_both_huge_entries_splits_each_at_its_end()
    {
        MapRegion();
        Assert.That(UnmapAt(Va + Huge - Page, 2 * Page), Is.Zero);

        Assert.That(QueryAt(Va + Huge - 2 * Page), Is.EqualTo(Io(Va + Huge - 2 * Page, Page, _io.Paddr + Huge - 2 * Page, RW)));
        Assert.That(QueryAt(Va + Huge - Page), Is.EqualTo(Hole(Va + Huge - Page, Va + Huge)));
        Assert.That(QueryAt(Va + Huge), Is.EqualTo(Hole(Va + Huge, Va + Huge + Page)));
        Assert.That(QueryAt(Va + Huge + Page), Is.EqualTo(Io(Va + Huge + Page, Page, _io.Paddr + Huge + Page, RW)));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Partial_protect_splits_the_huge_entry()
    {
        MapRegion();
        using (CursorMut c = Space.CursorMut(Span(Va + Huge, Huge)))
        {
            c.Jump(Va + Huge + Page);
            VaddrRange? r = c.ProtectNext(Page, (ref PageFlags f, ref CachePolicy cp) => f = PageFlags.R);
            Assert.That(r, Is.EqualTo(Span(Va + Huge + Page, Page)));
            Assert.That(c.VirtAddr, Is.EqualTo(Va + Huge + 2 * Page));
            HostMaps.AssertMapsFile(Space, Va + Huge + Page, Ino, Huge + Page, "rw-s");
        }

        Assert.That(QueryAt(Va + Huge), Is.EqualTo(Io(Va + Huge, Page, _io.Paddr + Huge, RW)));
        Assert.That(QueryAt(Va + Huge + Page), Is.EqualTo(Io(Va + Huge + Page, Page, _io.Paddr + Huge + Page, R)));
        Assert.That(QueryAt(Va + Huge + 2 * Page), Is.EqualTo(Io(Va + Huge + 2 * Page, Page, _io.Paddr + Huge + 2 * Page, RW)));
        Assert.That(QueryAt(Va), Is.EqualTo(Io(Va, Huge, _io.Paddr, RW)), "the first huge entry is untouched");

        HostMaps.AssertMapsFile(Space, Va + Huge, Ino, Huge, "rw-s");
        HostMaps.AssertMapsFile(Space, Va + Huge + Page, Ino, Huge + Page, "r--s");
        HostMaps.AssertMapsFile(Space, Va + Huge + 2 * Page, Ino, Huge + 2 * Page, "rw-s");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Protecting_a_whole_huge_entry_keeps_it_huge()
    {
        MapRegion();
        long nodes = Space.PageTableNodes;
        using (CursorMut c = Space.CursorMut(Span(Va, RegionSize)))
            Assert.That(c.ProtectNext(RegionSize, (ref PageFlags f, ref CachePolicy cp) => f = PageFlags.R), Is.EqualTo(Span(Va, Huge)));

        Assert.That(QueryAt(Va), Is.EqualTo(Io(Va, Huge, _io.Paddr, R)));
        Assert.That(QueryAt(Va + Huge), Is.EqualTo(Io(Va + Huge, Huge, _io.Paddr + Huge, RW)));
        Assert.That(Space.PageTableNodes, Is.EqualTo(nodes));
        HostMaps.AssertMapsFile(Space, Va, Ino, 0, "r--s");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void FindIoMemByPaddr_returns_the_region_and_the_offset()
    {
        MapRegion();
        using CursorMut c = Space.CursorMut(Span(Va, RegionSize));
        c.Jump(Va + Huge + 5 * Page);
        var (_, item) = c.Query();
        var io = (MappedIoMem)item!;

        var found = c.FindIoMemByPaddr(io.Paddr);
        Assert.That(found, Is.Not.Null);
        Assert.That(found!.Value.IoMem, Is.SameAs(_io));
        Assert.That(found.Value.Offset, Is.EqualTo(Huge));

        Assert.That(c.FindIoMemByPaddr(_io.Paddr + Huge + 5 * Page)!.Value.Offset, Is.EqualTo(Huge + 5 * Page));
        Assert.That(c.FindIoMemByPaddr(_io.Paddr + RegionSize), Is.Null, "just past the region");
        Assert.That(c.FindIoMemByPaddr(0), Is.Null, "frame-pool addresses are not I/O memory");
    }

    [Test]
    public void An_unmapped_region_is_still_found_and_kept_open_until_the_space_goes()
    {
        VmSpace space = NewSpace(64 * MiB);
        using (CursorMut c = space.CursorMut(Span(Huge, RegionSize)))
        {
            c.MapIoMem(_io, RW, RegionSize, 0);
            c.Jump(Huge);
            c.Unmap(RegionSize);
            Assert.That(c.FindIoMemByPaddr(_io.Paddr + Page)!.Value.IoMem, Is.SameAs(_io));
        }
        _io.Dispose();
        Assert.That(_io.IsOpen, Is.True, "the space still holds the region");
        space.Dispose();
        Assert.That(_io.IsOpen, Is.False, "the last holder closed the descriptor");
    }

    [Test]
    public void Unaligned_placement_maps_the_region_with_base_pages()
    {
        MapRegion(Va + Page, RegionSize);
        Assert.That(QueryAt(Va + Page), Is.EqualTo(Io(Va + Page, Page, _io.Paddr, RW)));
        Assert.That(QueryAt(Va + Huge + Page), Is.EqualTo(Io(Va + Huge + Page, Page, _io.Paddr + Huge, RW)));
        HostMaps.AssertMapsFile(Space, Va + Page, Ino, 0, "rw-s");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void An_offset_mapping_uses_huge_entries_only_where_aligned()
    {
        // Offset 1 MiB at va 1 MiB: both 2 MiB aligned from va 2 MiB on.
        using (CursorMut c = Space.CursorMut(Span(Huge / 2, 3 * Huge)))
            c.MapIoMem(_io, RW, 3 * Huge / 2, Huge / 2);
        Assert.That(QueryAt(Huge / 2), Is.EqualTo(Io(Huge / 2, Page, _io.Paddr + Huge / 2, RW)));
        Assert.That(QueryAt(Huge), Is.EqualTo(Io(Huge, Huge, _io.Paddr + Huge, RW)));
        HostMaps.AssertMapsFile(Space, Huge / 2, Ino, Huge / 2, "rw-s");
        HostMaps.AssertMapsFile(Space, Huge, Ino, Huge, "rw-s");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void The_mapping_is_cut_at_the_end_of_the_region()
    {
        using (CursorMut c = Space.CursorMut(Span(Va, 4 * Huge)))
        {
            c.MapIoMem(_io, RW, 4 * Huge, Huge);
            Assert.That(c.VirtAddr, Is.EqualTo(Va + Huge), "only the 2 MiB left in the region were mapped");
        }
        Assert.That(QueryAt(Va), Is.EqualTo(Io(Va, Huge, _io.Paddr + Huge, RW)));
        Assert.That(QueryAt(Va + Huge), Does.EndWith("hole"));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void An_offset_at_or_past_the_region_end_maps_nothing()
    {
        using (CursorMut c = Space.CursorMut(Span(Va, Huge)))
        {
            c.MapIoMem(_io, RW, Huge, RegionSize);
            c.MapIoMem(_io, RW, Huge, RegionSize + Huge);
            Assert.That(c.VirtAddr, Is.EqualTo(Va));
            Assert.That(c.Flusher.PendingOps, Is.Zero);
        }
        Assert.That(QueryAt(Va), Does.EndWith("hole"));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Mapping_a_frame_over_a_huge_entry_replaces_only_that_page()
    {
        MapRegion();
        using UFrame f = TaggedFrame(0xF4A);
        MapAt(Va + 7 * Page, f);

        Assert.That(QueryAt(Va + 7 * Page), Is.EqualTo(Ram(Va + 7 * Page, f, RW)));
        Assert.That(QueryAt(Va + 6 * Page), Is.EqualTo(Io(Va + 6 * Page, Page, _io.Paddr + 6 * Page, RW)));
        Assert.That(QueryAt(Va + 8 * Page), Is.EqualTo(Io(Va + 8 * Page, Page, _io.Paddr + 8 * Page, RW)));
        Assert.That(f.ReferenceCount, Is.EqualTo(2));
        Assert.That(HostMaps.ReadU64(Space, Va + 7 * Page), Is.EqualTo(0xF4AUL));
        HostMaps.AssertMapsFrame(Space, Va + 7 * Page, f.Paddr, "rw-s");
        HostMaps.AssertMirrored(Space);

        Assert.That(UnmapAt(Va, RegionSize), Is.EqualTo(1UL), "only the frame counts");
        Assert.That(f.ReferenceCount, Is.EqualTo(1));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Mapping_a_region_over_frames_releases_them_after_the_flush()
    {
        using USegment seg = Pool.AllocSegment(4);
        MapAt(Va, seg);
        using (CursorMut c = Space.CursorMut(Span(Va, RegionSize)))
        {
            c.MapIoMem(_io, RW, RegionSize, 0);
            Assert.That(c.Flusher.PendingReleases, Is.EqualTo(4));
            Assert.That(Pool.ReferenceCount(seg.Paddr), Is.EqualTo(2));
        }
        for (ulong i = 0; i < 4; i++) Assert.That(Pool.ReferenceCount(seg.Paddr + i * Page), Is.EqualTo(1));
        Assert.That(QueryAt(Va), Is.EqualTo(Io(Va, Page, _io.Paddr, RW)));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void A_file_region_maps_the_files_bytes_at_its_offset()
    {
        string path = Path.Combine(Path.GetTempPath(), $"uvm-core-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            byte[] content = new byte[3 * Page];
            BitConverter.TryWriteBytes(content.AsSpan((int)Page), 0xF11EUL);
            BitConverter.TryWriteBytes(content.AsSpan((int)(2 * Page)), 0xF11FUL);
            File.WriteAllBytes(path, content);
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
            using IoMem file = IoMem.FromFile((int)handle.DangerousGetHandle(), Page, 2 * Page);

            using (CursorMut c = Space.CursorMut(Span(Va, 2 * Page)))
                c.MapIoMem(file, R, 2 * Page, 0);
            Assert.That(HostMaps.ReadU64(Space, Va), Is.EqualTo(0xF11EUL));
            Assert.That(HostMaps.ReadU64(Space, Va + Page), Is.EqualTo(0xF11FUL));
            Assert.That(QueryAt(Va), Is.EqualTo(Io(Va, Page, file.Paddr, R)));
            HostMaps.AssertMapsFile(Space, Va, file.Identity.Ino, Page, "r--s");
            HostMaps.AssertMirrored(Space);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void Mapping_a_disposed_region_throws_ObjectDisposed_and_maps_nothing()
    {
        using IoMem gone = IoMem.CreateAnonymous(Huge);
        gone.Dispose();
        using (CursorMut c = Space.CursorMut(Span(Va, Huge)))
        {
            Assert.Throws<ObjectDisposedException>(() => c.MapIoMem(gone, RW, Huge, 0));
            Assert.That(c.Flusher.PendingOps, Is.Zero);
        }
        Assert.That(QueryAt(Va), Does.EndWith("hole"));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Regions_get_distinct_2MiB_aligned_physical_ranges_above_the_pools()
    {
        using IoMem other = IoMem.CreateAnonymous(Page);
        Assert.That(_io.Paddr % Huge, Is.Zero);
        Assert.That(other.Paddr % Huge, Is.Zero);
        Assert.That(_io.Paddr, Is.GreaterThanOrEqualTo(Pool.Capacity));
        Assert.That(other.Paddr >= _io.Paddr + RegionSize || other.Paddr + Huge <= _io.Paddr, Is.True, "the ranges overlap");
    }
}
