// The example mini program: one login module for the whole app, created here and
// reached from pages through getApp().auth.
import { createMiniAuth } from './miniauth.js';

// Your miniauth (add it to the legal request domains in the mini program console) and
// this mini program's AppID (the one configured in miniauth's [[apps]]).
const MINIAUTH_URL = 'https://auth.example.com';
const APPID = 'wxd000000000000001';

App({
  auth: createMiniAuth({ baseUrl: MINIAUTH_URL, appid: APPID }),
});
