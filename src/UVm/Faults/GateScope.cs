using System.Runtime.CompilerServices;

namespace UVm.Faults;

/// <summary>
/// One fallible access's stay inside a space's <see cref="ArenaGate"/>: the constructor enters,
/// <see cref="Dispose"/> leaves. Used with <c>using</c>, so every way out of the access (a
/// return, an exception from a page-fault handler) leaves exactly once, and a nested access (a
/// handler that touches guest memory) restores the outer one when it leaves.
/// </summary>
/// <remarks>
/// Once inside, the access reads the gate (<see cref="ArenaGate.IsClosed"/>) and touches the
/// arena only if it is open: <see cref="ArenaGate.WaitForAccessesToLeave"/> says why that
/// order keeps the disposer out. A <c>default</c> scope is no scope: make one with the
/// constructor only.
/// </remarks>
internal readonly ref struct GateScope
{
    private readonly ThreadAccess _thread;
    private readonly long _outer;

    /// <summary>Enters <paramref name="gate"/> for an access of the thread whose state is <paramref name="thread"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal GateScope(ThreadAccess thread, ArenaGate gate)
    {
        _thread = thread;
        thread.Enter(gate.Id, out _outer);
    }

    /// <summary>Leaves the gate.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Dispose() => _thread.Leave(_outer);
}
