using System.Runtime.InteropServices;

namespace Drydock.TestKit.Interop;

/// <summary>The few libc calls the fixtures need to signal whole process groups.</summary>
internal static partial class NativeMethods
{
    public const int SigKill = 9;
    public const int SigTerm = 15;

    /// <summary>No such process or process group.</summary>
    public const int Esrch = 3;

    /// <summary>kill(2): a negative <paramref name="pid"/> signals the process group -pid; signal 0 only probes.</summary>
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);
}
