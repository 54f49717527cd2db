namespace UVm.Io;

/// <summary>Marks whether a reader or writer may meet page faults.</summary>
public interface IAccessMode;

/// <summary>Memory that cannot fault: library memory, spans, frames through the linear map.</summary>
public readonly struct Infallible : IAccessMode;

/// <summary>Guest memory: every access may fault and is done by UVm's fault-recovering primitives.</summary>
public readonly struct Fallible : IAccessMode;
