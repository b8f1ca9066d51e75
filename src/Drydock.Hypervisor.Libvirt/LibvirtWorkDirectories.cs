using Drydock.Hypervisor.Libvirt.Interop;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>
/// Creates the directories pull-mode captures need, usable by QEMU: <see cref="LibvirtDriverOptions.ScratchDirectory"/>
/// (mode 0755: libvirt creates the scratch files as root and hands them to QEMU) and
/// <see cref="LibvirtDriverOptions.SocketDirectory"/> (mode 0750, owned by QEMU's user when Drydock runs as root: QEMU
/// creates the NBD sockets there, <c>nbd-server-start</c> fails with "Permission denied" otherwise). Run before every
/// capture and restore export, so a fresh or root-created work directory just works. Existing directories keep their
/// mode and group.
/// </summary>
internal static class LibvirtWorkDirectories
{
    /// <summary>The users libvirt runs QEMU as, tried in order when <see cref="LibvirtDriverOptions.QemuUser"/> is not set.</summary>
    public static readonly IReadOnlyList<string> KnownQemuUsers = ["libvirt-qemu", "qemu"];

    private const UnixFileMode ScratchMode = (UnixFileMode)0b111_101_101;
    private const UnixFileMode SocketMode = (UnixFileMode)0b111_101_000;

    private static readonly Lock PasswordLock = new();

    /// <summary>Creates both directories if missing and, running as root, gives the socket directory to QEMU's user.</summary>
    /// <param name="options">The directories and QEMU's user.</param>
    /// <exception cref="HypervisorException">A directory cannot be created or handed over; the message names it.</exception>
    public static void Prepare(LibvirtDriverOptions options)
    {
        Create(options.ScratchDirectory, ScratchMode, "scratch directory");
        Create(options.SocketDirectory, SocketMode, "NBD socket directory");
        if (!Environment.IsPrivilegedProcess)
        {
            return;
        }

        uint uid;
        lock (PasswordLock)
        {
            var user = options.QemuUser ?? KnownQemuUsers.FirstOrDefault(u => LibcNativeMethods.TryGetUserId(u, out _));
            if (user is null)
            {
                // No libvirt QEMU user on this host (QEMU runs as root, or the sockets are not used): nothing to hand over.
                return;
            }

            if (!LibcNativeMethods.TryGetUserId(user, out uid))
            {
                throw new HypervisorException($"QEMU's user '{user}' (LibvirtDriverOptions.QemuUser), who must own the NBD socket directory {options.SocketDirectory}, does not exist on this host.");
            }
        }

        try
        {
            LibcNativeMethods.ChangeOwner(options.SocketDirectory, uid);
        }
        catch (IOException e)
        {
            throw new HypervisorException($"Cannot give the NBD socket directory {options.SocketDirectory} to QEMU's user: {e.Message}", innerException: e);
        }
    }

    private static void Create(string path, UnixFileMode mode, string what)
    {
        if (Directory.Exists(path))
        {
            return;
        }

        try
        {
            Directory.CreateDirectory(path);
            File.SetUnixFileMode(path, mode);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new HypervisorException($"Cannot create the {what} {path}: {e.Message}", innerException: e);
        }
    }
}
