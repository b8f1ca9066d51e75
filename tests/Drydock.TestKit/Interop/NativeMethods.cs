using System.Runtime.InteropServices;

namespace Drydock.TestKit.Interop;

/// <summary>The few libc calls and constants the fixtures need to signal whole process groups and find a socket's server.</summary>
internal static partial class NativeMethods
{
    public const int SigInt = 2;
    public const int SigKill = 9;
    public const int SigTerm = 15;

    /// <summary>getsockopt level of socket options.</summary>
    public const int SolSocket = 1;

    /// <summary>getsockopt option: the credentials (pid, uid, gid) of a Unix socket's peer.</summary>
    public const int SoPeerCred = 17;

    /// <summary>No such process or process group.</summary>
    public const int Esrch = 3;

    /// <summary>kill(2): a negative <paramref name="pid"/> signals the process group -pid; signal 0 only probes.</summary>
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);
}
