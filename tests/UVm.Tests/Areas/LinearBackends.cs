using NUnit.Framework;
using UVm.Areas;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.Areas;

/// <summary>
/// Linear areas map a fixed range of frames (or of I/O memory) at once: they never fault for
/// data, and their writes are shared with the owner of the frames and across a fork.
/// </summary>
[TestFixture, NonParallelizable, CancelAfter(60_000)]
public sealed class LinearBackends : AreaFixture
{
    private const ulong A = 8 * MiB;

    [Test]
    public void A_linear_frames_area_maps_the_segment_at_its_offset_at_once()
    {
        using var segment = Pool.AllocSegment(8);
        VmWriter<Infallible> w = segment.Writer();
        w.Write(Filled(0x61, (int)(8 * Page)));

        Parent.Map(4 * Page, new AreaBackend.LinearFrames(segment, 2 * Page), At(A));

        Dictionary<ulong, PageInfo> pages = Pages(Parent, Span(A, 4 * Page));
        Assert.That(pages.Keys.Order(), Is.EqualTo(Enumerable.Range(0, 4).Select(i => A + (ulong)i * Page)));
        foreach ((ulong va, PageInfo p) in pages)
        {
            Assert.That(p.Paddr, Is.EqualTo(segment.Paddr + 2 * Page + (va - A)));
            Assert.That(p.References, Is.EqualTo(2), "the segment's handle and the mapping");
        }
        var faults = Faults(Parent);
        Assert.That(Read(Parent, A, (int)(4 * Page)), Is.EqualTo(Filled(0x61, (int)(4 * Page))));
        Assert.That(Faults(Parent), Is.EqualTo(faults), "no fault: mapped at once");
        AssertHostMirrors(Parent);
        Parent.Clear();
    }

    [Test]
    public void Writes_to_a_linear_area_are_shared_with_the_segment()
    {
        using var segment = Pool.AllocSegment(4);
        Parent.Map(4 * Page, new AreaBackend.LinearFrames(segment, 0), At(A));

        WriteU64(Parent, A + Page + 8, 0xFEED);

        VmReader<Infallible> r = segment.Reader();
        r.Skip(Page + 8);
        Assert.That(r.ReadVal<ulong>(), Is.EqualTo(0xFEEDUL));

        VmWriter<Infallible> w = segment.Writer();
        w.WriteVal(0xBEEFUL);
        Assert.That(ReadU64(Parent, A), Is.EqualTo(0xBEEFUL));
        Parent.Clear();
    }

    [Test]
    public void Writes_to_a_linear_area_are_shared_across_a_fork()
    {
        using var segment = Pool.AllocSegment(4);
        Parent.Map(4 * Page, new AreaBackend.LinearFrames(segment, 0), At(A));
        AddressSpace child = ForkOf(Parent);
        long frames = Pool.FramesInUse;

        WriteU64(child, A + 3 * Page, 33);
        WriteU64(Parent, A, 11);

        Assert.That(ReadU64(Parent, A + 3 * Page), Is.EqualTo(33UL));
        Assert.That(ReadU64(child, A), Is.EqualTo(11UL));
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames), "nothing copied");
        Assert.That(child.Stats.CopyOnWriteCopies + Parent.Stats.CopyOnWriteCopies, Is.Zero);
        Assert.That(child.Stats.SharedWriteRestores + Parent.Stats.SharedWriteRestores, Is.GreaterThanOrEqualTo(1),
            "a fork may write-protect linear pages; a write fault then restores W instead of copying");
        Assert.That(PageAt(Parent, A)!.Value.Paddr, Is.EqualTo(PageAt(child, A)!.Value.Paddr));
        Assert.That(PageAt(Parent, A)!.Value.References, Is.EqualTo(3), "segment, parent, child");
        AssertHostMirrors(Parent, child);
        child.Dispose();
        Parent.Clear();
    }

    [Test]
    public void Unmapping_a_linear_area_leaves_the_segment_to_its_owner()
    {
        using var segment = Pool.AllocSegment(4);
        Parent.Map(4 * Page, new AreaBackend.LinearFrames(segment, 0), At(A));
        WriteU64(Parent, A, 5);

        Parent.Unmap(Span(A, 4 * Page));

        Assert.That(Pool.FramesInUse, Is.EqualTo(4));
        Assert.That(Pool.ReferenceCount(segment.Paddr), Is.EqualTo(1));
        VmReader<Infallible> r = segment.Reader();
        Assert.That(r.ReadVal<ulong>(), Is.EqualTo(5UL));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void A_linear_io_memory_area_is_shared_between_spaces()
    {
        using IoMem io = IoMem.CreateAnonymous(4 * Huge);
        AddressSpace other = NewAddressSpace();
        Parent.Map(2 * Huge, new AreaBackend.LinearIoMem(io, Huge), At(Huge));
        other.Map(2 * Page, new AreaBackend.LinearIoMem(io, Huge + 16 * Page), At(A));

        WriteU64(Parent, Huge + 17 * Page, 0x1010);

        Assert.That(ReadU64(other, A + Page), Is.EqualTo(0x1010UL));
        var slots = Parent.QueryRange(Span(Huge, 2 * Huge));
        Assert.That(slots.Select(s => s.Range), Is.EqualTo(new[] { Span(Huge, Huge), Span(2 * Huge, Huge) }), "2 MiB aligned on both sides: 2 MiB entries");
        Assert.That(slots.Select(s => (s.Item as MappedIoMem)?.Paddr), Is.EqualTo(new ulong?[] { io.Paddr + Huge, io.Paddr + 2 * Huge }));
        Assert.That(Pool.FramesInUse, Is.Zero, "I/O memory uses no frames of the pool");
        Assert.That(Parent.Stats.DemandZeroFaults, Is.Zero);
        AssertHostMirrors(Parent, other);
    }

    [Test]
    public void A_linear_io_memory_area_is_shared_across_a_fork_and_can_be_split()
    {
        using IoMem io = IoMem.CreateAnonymous(16 * Page);
        Parent.Map(16 * Page, new AreaBackend.LinearIoMem(io, 0), At(A));
        AddressSpace child = ForkOf(Parent);

        WriteU64(child, A + 5 * Page, 55);
        Assert.That(ReadU64(Parent, A + 5 * Page), Is.EqualTo(55UL));

        Parent.Unmap(Span(A + 4 * Page, Page));
        Assert.That(Parent.Areas.Select(a => a.Backend), Is.EqualTo(new AreaBackend[]
        {
            new AreaBackend.LinearIoMem(io, 0),
            new AreaBackend.LinearIoMem(io, 5 * Page),
        }));
        Assert.That(ReadU64(Parent, A + 5 * Page), Is.EqualTo(55UL));
        Assert.That(ReadU64(child, A + 4 * Page), Is.Zero, "the child keeps its mapping");
        AssertHostMirrors(Parent, child);
    }
}
