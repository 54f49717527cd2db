using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>Moving a cursor inside its range: Jump, FindNext, enumeration, and Query at the edges.</summary>
public sealed class CursorMovement : SpaceFixture
{
    [Test]
    public void Jump_inside_the_range_moves_the_cursor_there_forwards_and_backwards()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        MapAt(Huge + Page, a);
        MapAt(3 * Huge, b);

        using Cursor c = Space.Cursor(Span(Huge, 4 * Huge));
        c.Jump(3 * Huge);
        Assert.That(c.VirtAddr, Is.EqualTo(3 * Huge));
        Assert.That(Describe(c.Query()), Is.EqualTo(Ram(3 * Huge, b, RW)));
        c.Jump(Huge + Page);
        Assert.That(c.VirtAddr, Is.EqualTo(Huge + Page));
        Assert.That(Describe(c.Query()), Is.EqualTo(Ram(Huge + Page, a, RW)));
        c.Jump(Huge);
        Assert.That(Describe(c.Query()), Is.EqualTo(Hole(Huge, Huge + Page)));
        c.Jump(5 * Huge - Page);
        Assert.That(Describe(c.Query()), Is.EqualTo(Hole(5 * Huge - Page, 5 * Huge)));
    }

    [Test]
    public void Jump_to_the_range_end_or_before_its_start_is_InvalidArgs_and_does_not_move()
    {
        using Cursor c = Space.Cursor(Span(Huge, Huge));
        c.Jump(Huge + 8 * Page);
        foreach (ulong bad in new[] { Huge + Huge, Huge - Page, 0UL, Space.Size, ulong.MaxValue & ~(Page - 1) })
        {
            var ex = Assert.Throws<UVmException>(() => c.Jump(bad));
            Assert.That(ex!.Error, Is.EqualTo(UVmError.InvalidArgs), $"jump to 0x{bad:x}");
            Assert.That(c.VirtAddr, Is.EqualTo(Huge + 8 * Page));
        }
    }

    [Test]
    public void Jump_to_an_unaligned_address_throws_ArgumentException_and_does_not_move()
    {
        using Cursor c = Space.Cursor(Span(0, Huge));
        Assert.Throws<ArgumentException>(() => c.Jump(0x1234));
        Assert.That(c.VirtAddr, Is.Zero);
    }

    [Test]
    public void Jump_back_from_an_exhausted_cursor_works()
    {
        using UFrame f = Pool.AllocFrame();
        using CursorMut c = Space.CursorMut(Span(Huge - Page, Page));
        c.Map(f, RW);
        Assert.That(c.VirtAddr, Is.EqualTo(Huge), "exhausted: at the range's end, the start of the next node");
        Assert.That(Assert.Throws<UVmException>(() => c.Query())!.Error, Is.EqualTo(UVmError.InvalidArgs));
        c.Jump(Huge - Page);
        Assert.That(Describe(c.Query()), Is.EqualTo(Ram(Huge - Page, f, RW)));
    }

    [Test]
    public void A_mutable_cursor_jumps_between_nodes_and_maps_where_it_lands()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        using (CursorMut c = Space.CursorMut(Span(0, GiB)))
        {
            c.Jump(700 * MiB);
            c.Map(a, RW);
            c.Jump(Page);
            c.Map(b, RW);
            Assert.That(c.VirtAddr, Is.EqualTo(2 * Page));
        }
        Assert.That(QueryAt(700 * MiB), Is.EqualTo(Ram(700 * MiB, a, RW)));
        Assert.That(QueryAt(Page), Is.EqualTo(Ram(Page, b, RW)));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void FindNext_stops_at_the_first_mapped_page()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        MapAt(300 * MiB, a);
        MapAt(600 * MiB, b);

        using Cursor c = Space.Cursor(Span(0, GiB));
        Assert.That(c.FindNext(GiB), Is.EqualTo(300 * MiB));
        Assert.That(c.VirtAddr, Is.EqualTo(300 * MiB));
        Assert.That(c.FindNext(GiB - c.VirtAddr), Is.EqualTo(300 * MiB), "a mapped current address is found in place");
        c.Jump(300 * MiB + Page);
        Assert.That(c.FindNext(GiB - c.VirtAddr), Is.EqualTo(600 * MiB));
        c.Jump(600 * MiB + Page);
        Assert.That(c.FindNext(GiB - c.VirtAddr), Is.Null);
    }

    [Test]
    public void FindNext_returns_null_when_the_mapping_lies_just_past_the_span()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(12 * Page, f);

        using Cursor c = Space.Cursor(Span(0, 16 * Page));
        Assert.That(c.FindNext(12 * Page), Is.Null);
        Assert.That(c.VirtAddr, Is.GreaterThanOrEqualTo(12 * Page));
        c.Jump(0);
        Assert.That(c.FindNext(12 * Page + Page), Is.EqualTo(12 * Page));
    }

    [Test]
    public void FindNext_reaches_the_last_page_of_the_range()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Huge - Page, f);

        using Cursor c = Space.Cursor(Span(0, Huge));
        Assert.That(c.FindNext(Huge), Is.EqualTo(Huge - Page));
        c.Jump(Huge - Page);
        Assert.That(c.FindNext(Page), Is.EqualTo(Huge - Page));
    }

    [Test]
    public void FindNext_of_zero_bytes_finds_nothing_and_stays()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        using Cursor c = Space.Cursor(Span(0, Page));
        Assert.That(c.FindNext(0), Is.Null);
        Assert.That(c.VirtAddr, Is.Zero);
    }

    [Test]
    public void FindNext_past_the_range_end_throws_ArgumentOutOfRange_and_does_not_move()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Huge + 4 * Page, f);
        using Cursor c = Space.Cursor(Span(Huge, 8 * Page));
        c.Jump(Huge + 2 * Page);
        Assert.Throws<ArgumentOutOfRangeException>(() => c.FindNext(6 * Page + Page));
        Assert.That(c.VirtAddr, Is.EqualTo(Huge + 2 * Page));
        Assert.That(c.FindNext(6 * Page), Is.EqualTo(Huge + 4 * Page), "the cursor still works");
    }

    [Test]
    public void Enumeration_yields_holes_and_mapped_slots_with_their_ranges()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        MapAt(Page, a);
        MapAt(3 * Page, b, R);

        Assert.That(Snapshot(Span(0, 5 * Page)), Is.EqualTo(new[]
        {
            Hole(0, Page),
            Ram(Page, a, RW),
            Hole(2 * Page, 3 * Page),
            Ram(3 * Page, b, R),
            Hole(4 * Page, 5 * Page),
        }));
    }

    [Test]
    public void Enumeration_reports_a_missing_node_as_one_hole_up_to_the_next_slot_boundary()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Page, f);

        List<string> slots = Snapshot(Span(0, 2 * Huge));
        Assert.That(slots, Has.Count.EqualTo(512 + 1), "512 base slots of the first 2 MiB, then one 2 MiB hole");
        Assert.That(slots[1], Is.EqualTo(Ram(Page, f, RW)));
        Assert.That(slots[^2], Is.EqualTo(Hole(Huge - Page, Huge)));
        Assert.That(slots[^1], Is.EqualTo(Hole(Huge, 2 * Huge)));
    }

    [Test]
    public void Enumeration_of_an_empty_space_is_one_hole_clipped_to_the_range()
    {
        Assert.That(Snapshot(Span(Page, 3 * Page)), Is.EqualTo(new[] { Hole(Page, 4 * Page) }));
        Assert.That(Snapshot(Span(5 * Huge, 100 * MiB)), Is.EqualTo(new[] { Hole(5 * Huge, 5 * Huge + 100 * MiB) }));
    }

    [Test]
    public void Enumeration_starts_at_the_current_address_and_leaves_the_cursor_at_the_end()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        MapAt(0, a);
        MapAt(2 * Page, b);

        using Cursor c = Space.Cursor(Span(0, 4 * Page));
        c.Jump(2 * Page);
        var slots = c.Select(Describe).ToList();
        Assert.That(slots, Is.EqualTo(new[] { Ram(2 * Page, b, RW), Hole(3 * Page, 4 * Page) }));
        Assert.That(c.VirtAddr, Is.EqualTo(4 * Page));
    }

    [Test]
    public void Query_of_a_hole_reaches_the_next_slot_boundary_or_the_range_end()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Huge, f);

        using (Cursor c = Space.Cursor(Span(Page, 3 * Page)))
            Assert.That(Describe(c.Query()), Is.EqualTo(Hole(Page, 4 * Page)), "no node below: the hole is clipped to the range");
        using (Cursor c = Space.Cursor(Span(Huge + Page, 3 * Page)))
            Assert.That(Describe(c.Query()), Is.EqualTo(Hole(Huge + Page, Huge + 2 * Page)), "inside a last-level node: one page");
        using (Cursor c = Space.Cursor(Span(3 * Huge + Page, 2 * Huge)))
            Assert.That(Describe(c.Query()), Is.EqualTo(Hole(3 * Huge + Page, 4 * Huge)), "a missing last-level node: up to its end");
    }

    [Test]
    public void Query_once_the_range_is_exhausted_is_InvalidArgs()
    {
        using Cursor c = Space.Cursor(Span(0, 2 * Page));
        Assert.That(c.Count(), Is.EqualTo(1));
        // Over a region with no node the cursor steps a whole top-level slot: "at or past" the end.
        Assert.That(c.VirtAddr, Is.GreaterThanOrEqualTo(2 * Page));
        Assert.That(Assert.Throws<UVmException>(() => c.Query())!.Error, Is.EqualTo(UVmError.InvalidArgs));
    }

    [Test]
    public void The_range_of_a_cursor_is_what_it_was_created_with()
    {
        using Cursor c = Space.Cursor(Span(3 * Page, 5 * Page));
        Assert.That(c.Range, Is.EqualTo(Span(3 * Page, 5 * Page)));
        Assert.That(c.VirtAddr, Is.EqualTo(3 * Page));
    }
}
