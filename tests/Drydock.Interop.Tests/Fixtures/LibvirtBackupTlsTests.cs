using Drydock.TestKit.Libvirt;
using Xunit;

namespace Drydock.Interop.Tests.Fixtures;

/// <summary>The qemu.conf edit behind <see cref="LibvirtBackupTls"/>: idempotent, and it leaves the packaged comments alone.</summary>
public sealed class LibvirtBackupTlsTests
{
    private const string Key = LibvirtBackupTls.SettingName;
    private const string Dir = LibvirtBackupTls.CertificatesDirectory;

    [Fact]
    public void Appends_the_setting_when_only_the_packaged_example_is_there()
    {
        const string conf = "# example\n#backup_tls_x509_cert_dir = \"/etc/pki/libvirt-backup\"\nuser = \"+0\"\n";

        var changed = LibvirtBackupTls.WithSetting(conf, Key, Dir);

        Assert.NotNull(changed);
        Assert.StartsWith(conf, changed, StringComparison.Ordinal);
        Assert.EndsWith($"\n{Key} = \"{Dir}\"\n", changed, StringComparison.Ordinal);
        Assert.Null(LibvirtBackupTls.WithSetting(changed, Key, Dir));
    }

    [Fact]
    public void Replaces_another_directory_in_place_and_drops_duplicates()
    {
        const string conf = "a = 1\n  backup_tls_x509_cert_dir = \"/etc/pki/other\"\nb = 2\nbackup_tls_x509_cert_dir=\"/x\"\n";

        var changed = LibvirtBackupTls.WithSetting(conf, Key, Dir);

        Assert.Equal($"a = 1\n{Key} = \"{Dir}\"\nb = 2\n", changed);
    }

    [Fact]
    public void Leaves_a_file_that_already_has_the_setting_unchanged()
    {
        Assert.Null(LibvirtBackupTls.WithSetting($"#x\n{Key}   =   \"{Dir}\"   # ours\n", Key, Dir));
        Assert.NotNull(LibvirtBackupTls.WithSetting($"{Key}_extra = \"{Dir}\"\n", Key, Dir));
    }
}
