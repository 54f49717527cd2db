using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Io;
using UVm.Spaces;
using static UVm.Tests.Areas.GuestValues;

namespace UVm.Tests.Areas;

/// <summary>
/// Guard areas: reserved ranges that map nothing, whose every access fails reported as
/// <see cref="PageFaultKind.Guard"/> at the exact address, through every path a fault can take.
/// </summary>
[TestFixture, NonParallelizable, CancelAfter(60_000)]
public sealed class GuardAreas : AreaFixture
{
    /// <summary>A lazy area of 4 pages with a 2-page guard right above it (a stack and its guard); returns (stack, guard).</summary>
    private (ulong Stack, ulong Guard) StackWithGuard(AddressSpace space, PageFlags guardFlags = PageFlags.RW)
    {
        ulong stack = space.Map(4 * Page, Lazy, At(GiB / 4));
        ulong guard = space.Map(2 * Page, new AreaBackend.Guard(), At(stack + 4 * Page, guardFlags));
        return (stack, guard);
    }

    [Test]
    public void Every_access_to_a_guard_area_is_a_guard_fault_at_the_exact_address()
    {
        (ulong stack, ulong guard) = StackWithGuard(Parent);
        long frames = Pool.FramesInUse;

        AssertFault(TryWrite(Parent, stack + 4 * Page - 8, new byte[20]), guard, PageFaultKind.Guard, bytesDone: 8);
        AssertFault(TryRead(Parent, guard + Page + 123, new byte[1]), guard + Page + 123, PageFaultKind.Guard);
        Parent.Space.Activate();
        IoResult<ulong> v = ReadValOf<ulong>(Parent.Space, guard + 8, 8);
        Assert.That((v.Error, v.Fault!.Value.Kind, v.Fault.Value.Address, v.Fault.Value.Access),
            Is.EqualTo((UVmError.PageFault, PageFaultKind.Guard, guard + 8, PageFaultAccess.Read)));
        IoResult<uint> w = WriteValOf(Parent.Space, guard + 4, 4, 1u);
        Assert.That((w.Fault!.Value.Kind, w.Fault.Value.Access), Is.EqualTo((PageFaultKind.Guard, PageFaultAccess.Write)));

        Assert.That(Parent.Stats.GuardFaults, Is.EqualTo(4));
        Assert.That(Parent.Stats.Refused, Is.Zero);
        Assert.That(Pages(Parent, Span(guard, 2 * Page)), Is.Empty);
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames + 4), "only the stack, whose fault-around window the write filled");
        Assert.That(Parent.Space.HandlePageFault(guard, PageFaultAccess.Read), Is.False);
        var e = Assert.Throws<UVmException>(() => Parent.Prefault(Span(guard, Page), PageFaultAccess.Read));
        Assert.That(e!.Error, Is.EqualTo(UVmError.PageFault));
    }

    [Test]
    public void A_guard_area_without_rights_is_still_a_guard_fault_and_protect_changes_nothing()
    {
        (_, ulong guard) = StackWithGuard(Parent, PageFlags.None);
        AssertFault(TryRead(Parent, guard, new byte[1]), guard, PageFaultKind.Guard);
        Parent.Protect(Span(guard, Page), PageFlags.RWX);
        AssertFault(TryWrite(Parent, guard + Page - 1, new byte[1]), guard + Page - 1, PageFaultKind.Guard);
        Assert.That(Parent.Areas.Count(a => a.Backend is AreaBackend.Guard), Is.EqualTo(2), "split by the protect");
        Assert.That(Pages(Parent, Span(guard, 2 * Page)), Is.Empty);
    }

    [Test]
    public void A_guard_fault_is_reported_as_such_while_the_thread_holds_a_cursor()
    {
        (ulong stack, ulong guard) = StackWithGuard(Parent);
        using (Cursor c = Parent.Space.Cursor(Span(stack, Page)))
        {
            AssertFault(TryRead(Parent, guard + 16, new byte[8]), guard + 16, PageFaultKind.Guard);
            AssertFault(TryRead(Parent, stack + 2 * Page, new byte[8]), stack + 2 * Page, PageFaultKind.NotPresent);
        }
    }

    [Test]
    public void Unmapping_or_replacing_a_guard_area_ends_its_guard_faults()
    {
        (ulong stack, ulong guard) = StackWithGuard(Parent);
        Parent.Unmap(Span(guard, Page));
        AssertFault(TryRead(Parent, guard, new byte[1]), guard, PageFaultKind.NotPresent);
        AssertFault(TryRead(Parent, guard + Page, new byte[1]), guard + Page, PageFaultKind.Guard);

        Assert.That(Assert.Throws<UVmException>(() => Parent.Map(Page, Lazy, At(guard + Page)))!.Error, Is.EqualTo(UVmError.MapAlreadyMappedVaddr));
        Parent.Map(Page, Lazy, At(guard + Page, overwrite: true));
        Write(Parent, guard + Page, [1]);
        Assert.That(Read(Parent, stack, 1)[0], Is.Zero);
        Assert.That(Parent.Stats.GuardFaults, Is.EqualTo(1));
    }

    [Test]
    public void A_fork_keeps_the_guard_areas_and_a_plain_space_never_reports_guard()
    {
        (_, ulong guard) = StackWithGuard(Parent);
        AddressSpace child = ForkOf(Parent);
        AssertFault(TryRead(child, guard, new byte[1]), guard, PageFaultKind.Guard);
        Assert.That(child.Stats.GuardFaults, Is.EqualTo(1));

        using var plain = new VmSpace(new VmSpaceOptions { Size = GiB, Pool = Pool });
        plain.Activate();
        IoResult<byte> r = ReadValOf<byte>(plain, guard, 1);
        Assert.That(r.Fault!.Value.Kind, Is.EqualTo(PageFaultKind.NotPresent));
        Parent.Space.Activate();
    }

    [Test]
    public void Guard_is_the_last_kind_and_the_host_guard_option_has_its_own_name()
    {
        Assert.That(Enum.GetValues<PageFaultKind>().Last(), Is.EqualTo(PageFaultKind.Guard));
        Assert.That((int)PageFaultKind.Guard, Is.EqualTo(4));
        Assert.That(new VmSpaceOptions().HostGuardSize, Is.EqualTo(Huge));
        Assert.That(typeof(VmSpaceOptions).GetProperty("GuardSize"), Is.Null);
    }
}

/// <summary>One fallible value access or copy through a fresh reader or writer of <c>space</c> (activated by the caller).</summary>
internal static class GuestValues
{
    internal static IoResult<T> ReadValOf<T>(VmSpace space, ulong va, ulong len) where T : unmanaged
    {
        VmReader<Fallible> r = space.Reader(va, len);
        return r.ReadVal<T>();
    }

    internal static IoResult<T> WriteValOf<T>(VmSpace space, ulong va, ulong len, T value) where T : unmanaged
    {
        VmWriter<Fallible> w = space.Writer(va, len);
        return w.WriteVal(value);
    }

    internal static CopyResult ReadFallibleOf(VmSpace space, ulong va, ulong len, byte[] into)
    {
        VmReader<Fallible> r = space.Reader(va, len);
        return r.ReadFallible(into);
    }
}
