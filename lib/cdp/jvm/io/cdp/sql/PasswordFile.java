package io.cdp.sql;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Base64;

import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import javax.security.sasl.AuthenticationException;

import org.apache.hive.service.auth.PasswdAuthenticationProvider;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkContext;

/**
 * HiveServer2 CUSTOM authentication against the endpoint's users file ({@code spark.cdp.sql.users},
 * written by {@code cdp sql-user add}): one line per user,
 * {@code name:role:pbkdf2-sha256:iterations:salt(base64):hash(base64)}. A user is let in when the
 * password derives the stored hash and the user's role is the endpoint's ({@code spark.cdp.role}).
 * The file is read at every sign-in, so a user added or removed counts at once.
 */
public final class PasswordFile implements PasswdAuthenticationProvider {
    public static final String USERS_CONF = "spark.cdp.sql.users";

    @Override
    public void Authenticate(String user, String password) throws AuthenticationException {
        SparkConf conf = SparkContext.getOrCreate().getConf();
        String role = conf.get(RoleGuard.ROLE_CONF, "");
        String file = conf.get(USERS_CONF, "");
        if (user == null || password == null || role.isEmpty() || file.isEmpty()) {
            throw new AuthenticationException("sign-in refused");
        }
        try {
            for (String line : Files.readAllLines(Path.of(file), StandardCharsets.UTF_8)) {
                String[] f = line.strip().split(":");
                if (f.length == 6 && f[0].equals(user) && f[2].equals("pbkdf2-sha256")) {
                    byte[] salt = Base64.getDecoder().decode(f[4]);
                    byte[] stored = Base64.getDecoder().decode(f[5]);
                    PBEKeySpec spec = new PBEKeySpec(password.toCharArray(), salt, Integer.parseInt(f[3]),
                            stored.length * 8);
                    byte[] derived = SecretKeyFactory.getInstance("PBKDF2WithHmacSHA256").generateSecret(spec)
                            .getEncoded();
                    if (MessageDigest.isEqual(derived, stored) && f[1].equals(role)) {
                        return;
                    }
                    break;
                }
            }
        } catch (IOException | GeneralSecurityException | IllegalArgumentException e) {
            throw new AuthenticationException("sign-in refused: the users file cannot be read");
        }
        throw new AuthenticationException("sign-in refused for " + user);
    }
}
