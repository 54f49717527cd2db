using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>Page-table nodes exist only while they hold something: emptied nodes are reclaimed.</summary>
public sealed class PageTableReclaim : SpaceFixture
{
    private static readonly long RootBytes = NewSpaceBytes();

    private static long NewSpaceBytes()
    {
        using var pool = new FramePool(Huge);
        using var space = new VmSpace(new VmSpaceOptions { Size = Huge, Pool = pool });
        return space.PageTableBytes;
    }

    [Test]
    public void A_new_space_has_only_the_root_node()
    {
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));
        Assert.That(Space.PageTableBytes, Is.EqualTo(RootBytes));
        Assert.That(RootBytes, Is.GreaterThan(0));
    }

    [Test]
    public void One_mapped_page_needs_a_node_per_level()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        Assert.That(Space.PageTableNodes, Is.EqualTo(4));
        Assert.That(Space.PageTableBytes, Is.GreaterThan(RootBytes));
    }

    [Test]
    public void Unmapping_everything_reclaims_every_node()
    {
        ulong[] vas = { 0, Huge - Page, Huge, 300 * MiB, GiB - Page };
        foreach (ulong va in vas)
        {
            using UFrame f = Pool.AllocFrame();
            MapAt(va, f);
        }
        Assert.That(Space.PageTableNodes, Is.EqualTo(1 + 1 + 1 + 4), "root, one 1 GiB node, one 2 MiB node, four last-level nodes");

        Assert.That(UnmapAt(0, GiB), Is.EqualTo((ulong)vas.Length));
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));
        Assert.That(Space.PageTableBytes, Is.EqualTo(RootBytes));
    }

    [Test]
    public void Unmapping_through_narrow_cursors_reclaims_their_nodes_and_the_emptied_ancestors()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        MapAt(0, a);
        MapAt(Huge, b);
        Assert.That(Space.PageTableNodes, Is.EqualTo(5));

        UnmapAt(0, Page);
        Assert.That(Space.PageTableNodes, Is.EqualTo(4), "the first last-level node is gone, its parent still holds the second");
        UnmapAt(Huge, Page);
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));
    }

    [Test]
    public void Nodes_still_holding_mappings_are_kept()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        MapAt(0, a);
        MapAt(Page, b);
        UnmapAt(0, Page);
        Assert.That(Space.PageTableNodes, Is.EqualTo(4));
        Assert.That(QueryAt(Page), Is.EqualTo(Ram(Page, b, RW)));
    }

    [Test]
    public void A_mutable_cursor_that_maps_nothing_leaves_no_node_behind()
    {
        using (CursorMut c = Space.CursorMut(Span(5 * Huge + Page, Page)))
            Assert.That(Space.PageTableNodes, Is.EqualTo(4), "a mutable cursor builds the path to its range");
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));

        using (CursorMut c = Space.CursorMut(Span(0, GiB))) { }
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));
    }

    [Test]
    public void A_read_only_cursor_that_finds_nothing_leaves_no_node_behind()
    {
        using (Cursor c = Space.Cursor(Span(Huge, Page)))
        {
            Assert.That(c.Query().Item, Is.Null);
            // It builds the path to its range, as a mutable cursor does, so it locks no more than
            // its range's own node (not the root: that would stop every other cursor and fault).
            Assert.That(Space.PageTableNodes, Is.EqualTo(4), "a read-only cursor builds the path to its range");
        }
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));
    }

    [Test]
    public void Map_then_unmap_in_the_same_cursor_leaves_no_node_behind()
    {
        using UFrame f = Pool.AllocFrame();
        using (CursorMut c = Space.CursorMut(Span(0, 4 * Huge)))
        {
            c.Jump(3 * Huge);
            c.Map(f, RW);
            c.Jump(3 * Huge);
            Assert.That(c.Unmap(Huge), Is.EqualTo(1UL));
        }
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void A_huge_entry_needs_no_last_level_node_and_splitting_it_adds_one()
    {
        using IoMem io = IoMem.CreateAnonymous(Huge);
        // The cursor spans two 2 MiB slots so that it holds the 2 MiB-level node and can place a huge entry there.
        using (CursorMut c = Space.CursorMut(Span(Huge, 2 * Huge)))
            c.MapIoMem(io, RW, Huge, 0);
        Assert.That(Space.PageTableNodes, Is.EqualTo(3));

        UnmapAt(Huge, Page);
        Assert.That(Space.PageTableNodes, Is.EqualTo(4));

        UnmapAt(Huge, Huge);
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));
        HostMaps.AssertMirrored(Space);
    }
}
