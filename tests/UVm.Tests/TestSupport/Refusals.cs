using NUnit.Framework;
using UVm.Interop;

namespace UVm.Tests.TestSupport;

/// <summary>Running a call with the host refusing one of its host calls, each in turn.</summary>
internal static class Refusals
{
    private const int ENOMEM = 12;

    /// <summary>The exception <paramref name="action"/> throws, or null.</summary>
    internal static Exception? Catch(Action action)
    {
        try { action(); return null; }
        catch (Exception e) { return e; }
    }

    /// <summary>
    /// Refuses the <c>skip</c>-th call at <paramref name="site"/> of the call <paramref name="setUp"/>
    /// makes, for skip = 0, 1, ... until a run makes no such call; each refusal must be a
    /// <see cref="UVmException"/> of <see cref="UVmError.HostNoMemory"/> (the errno is ENOMEM) or
    /// none at all, and <paramref name="check"/> sees the outcome. Returns the refusals made.
    /// </summary>
    internal static int RefuseEachCall(HostCallSite site, Func<Action> setUp, Action<Exception?, int> check, string what)
    {
        int total = 0;
        for (int skip = 0; skip < 64; skip++)
        {
            Action call = setUp();
            Exception? e;
            int refused;
            using (HostRefusal.Scope scope = HostRefusal.Arm(site, ENOMEM, skip: skip, count: 1))
            {
                e = Catch(call);
                refused = scope.Refused;
            }
            if (e != null && refused == 0) Assert.Fail($"{what}: failed with no refusal: {e}");
            if (e != null)
                Assert.That(e, Is.InstanceOf<UVmException>().With.Property("Error").EqualTo(UVmError.HostNoMemory), $"{what}, {site} call {skip} refused: {e}");
            check(e, refused);
            total += refused;
            if (refused == 0) break;
        }
        return total;
    }
}
