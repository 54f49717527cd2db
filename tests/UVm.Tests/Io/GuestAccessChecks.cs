using NUnit.Framework;
using NUnit.Framework.Constraints;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.TestSupport;
using UVm.Tests.Faults;

namespace UVm.Tests.Io;

/// <summary>
/// <c>Reader</c>, <c>Writer</c> and <c>ReaderWriter</c> hand out access only to the space
/// activated on the calling thread, and only inside <c>[0, Size)</c>.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class GuestAccessChecks : GuestFixture
{
    public delegate void Open(VmSpace space, ulong va, ulong len);

    private static IEnumerable<TestCaseData> Openers()
    {
        yield return new TestCaseData(new Open((s, va, len) => s.Reader(va, len))).SetArgDisplayNames("Reader");
        yield return new TestCaseData(new Open((s, va, len) => s.Writer(va, len))).SetArgDisplayNames("Writer");
        yield return new TestCaseData(new Open((s, va, len) => s.ReaderWriter(va, len, out _, out _))).SetArgDisplayNames("ReaderWriter");
    }

    private static IResolveConstraint Denied =>
        Throws.TypeOf<UVmException>().With.Property(nameof(UVmException.Error)).EqualTo(UVmError.AccessDenied);

    [TestCaseSource(nameof(Openers))]
    public void Refused_when_no_space_is_activated_on_this_thread(Open open)
    {
        VmSpace.Deactivate();
        Assert.That(() => open(Space, Va, 16), Denied);
        Space.Activate();
        Assert.That(() => open(Space, Va, 16), Throws.Nothing);
    }

    [TestCaseSource(nameof(Openers))]
    public void Refused_when_the_space_is_activated_on_another_thread_only(Open open)
    {
        VmSpace.Deactivate();
        Exception? onOther = null;
        Deadlines.OnOtherThread(() =>
        {
            try
            {
                Space.Activate();
                open(Space, Va, 16);
            }
            catch (Exception e)
            {
                onOther = e;
            }
        }, "other opener");
        Assert.That(onOther, Is.Null, "the thread that activated it may open it");
        Assert.That(() => open(Space, Va, 16), Denied);
    }

    [TestCaseSource(nameof(Openers))]
    public void Refused_when_another_space_is_activated_on_this_thread(Open open)
    {
        using var other = new VmSpace(new VmSpaceOptions { Size = 2UL << 20, Pool = Pool });
        other.Activate();
        Assert.That(() => open(Space, Va, 16), Denied);
        Assert.That(() => open(other, 0, 16), Throws.Nothing);
    }

    [TestCaseSource(nameof(Openers))]
    public void Refused_when_the_range_overflows(Open open)
    {
        Assert.That(() => open(Space, ulong.MaxValue - 10, 100), Denied);
        Assert.That(() => open(Space, 100, ulong.MaxValue - 10), Denied);
    }

    [TestCaseSource(nameof(Openers))]
    public void Refused_when_the_range_passes_the_end_of_user_space(Open open)
    {
        ulong size = Space.Size;
        Assert.That(() => open(Space, size - 10, 11), Denied);
        Assert.That(() => open(Space, size, 1), Denied);
        Assert.That(() => open(Space, size + Page, 0), Denied);
        Assert.That(() => open(Space, size - 10, 10), Throws.Nothing, "a range ending exactly at Size is user space");
        Assert.That(() => open(Space, size, 0), Throws.Nothing);
    }

    [TestCaseSource(nameof(Openers))]
    public void Refused_after_the_space_is_disposed(Open open)
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 2UL << 20, Pool = Pool });
        space.Activate();
        space.Dispose();
        Assert.That(() => open(space, 0, 16), Throws.TypeOf<ObjectDisposedException>());
        Assert.That(space.IsActiveOnCurrentThread, Is.False);
    }

    [Test]
    public void ReaderWriter_gives_a_reader_and_a_writer_of_the_same_range()
    {
        MapFilled(Va, 0);
        Space.ReaderWriter(Va + 5, 32, out var reader, out var writer);
        Assert.That(reader.GuestAddress(), Is.EqualTo(Va + 5));
        Assert.That(writer.GuestAddress(), Is.EqualTo(Va + 5));
        Assert.That(reader.Remain, Is.EqualTo(32UL));
        Assert.That(writer.Avail, Is.EqualTo(32UL));

        byte[] data = PatternOf(Va, 32);
        Assert.That(writer.WriteFallible(data).Bytes, Is.EqualTo(32UL));
        byte[] back = new byte[32];
        Assert.That(reader.ReadFallible(back).Bytes, Is.EqualTo(32UL));
        Assert.That(back, Is.EqualTo(data));
    }
}
